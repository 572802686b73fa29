"""Filtered search: latency vs the fraction of items a filter keeps, hnswlib's filtered search against an
exact scan over the kept subset (the two ways of :func:`handler.core.filtered_search.filtered_search`): the
measurement behind ``FILTER_EXACT_BELOW``.

Data as bench/search/: 512-d clustered vectors (the queries from the same distribution, not in the
index), HNSW M=16 / ef_construction=100, ef 128, k 10; one query per call (as the service), p50. The kept
subset is a uniform random sample of the labels (a folder or date filter is as good as random for the
graph). The exact scan reads its vectors three ways: copied out of hnswlib (``get_items``: an index held
in memory only), in place from the HNSW file (an index loaded from S3, which has no embeddings.npy:
:mod:`handler.core.hnsw_vectors`) and from the embeddings array (a local index).

``python -m bench.filtered [N]`` prints the table; the ``make bench`` search section calls :func:`run`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from bench.search.measure import search_index
from bench.search.params import M
from bench.vectors import DIM, clustered
from handler.core.hnsw_vectors import HnswVectors
from handler.core.shards import FILTER_EXACT_BELOW

SELECTIVITIES = (1.0, 0.3, 0.1, 0.03, 0.01, 0.001)
K = 10
EF = 128


def _timed(fn: Any, queries: np.ndarray, budget_s: float) -> tuple[np.ndarray, list[Any]]:
    """One call per query (at least 3), stopping once ``budget_s`` is spent."""
    lat: list[float] = []
    out: list[Any] = []
    start = time.perf_counter()
    for q in queries:
        t0 = time.perf_counter()
        out.append(fn(q))
        lat.append(time.perf_counter() - t0)
        if len(lat) >= 3 and time.perf_counter() - start > budget_s:
            break
    return np.array(lat), out


def _hnsw_way(index: Any, q: np.ndarray, mask: np.ndarray) -> Any:
    return [h.label for h in index.search(q, K, ef=EF, allowed=mask, exact_below=0.0)[0]]


def _exact_way(index: Any, q: np.ndarray, mask: np.ndarray) -> Any:
    return [h.label for h in index.search(q, K, ef=EF, allowed=mask, exact_below=2.0)[0]]


def run(
    n: int = 100_000,
    *,
    selectivities: tuple[float, ...] = SELECTIVITIES,
    queries: int = 40,
    threads: int = 2,
    ef_construction: int = 100,
    seed: int = 0,
    cell_seconds: float = 3.0,
    cache: Path | None = None,
    log: Any = print,  # None: quiet
) -> list[dict[str, Any]]:
    """One row per selectivity: ``selectivity``, ``allowed``, p50 seconds of ``hnsw`` (filtered graph walk),
    ``exact`` (subset vectors copied out of hnswlib), ``exact_file`` (read in place from the HNSW file, as an
    index loaded from S3) and ``exact_npy`` (from the embeddings array, as a local index), ``hnsw_recall``
    (filtered HNSW top-k against the exact one),
    ``faster`` and ``chosen`` (the way :data:`FILTER_EXACT_BELOW` picks for a local index)."""
    log = log or (lambda *_: None)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    data = clustered(n, seed + 1, centres)
    qs = clustered(queries, seed + 2, centres)
    if cache is None:
        cache = Path(tempfile.mkdtemp(prefix="bench-filtered-")) / f"filtered-{n}.hnsw"
    t0 = time.perf_counter()
    hnsw = hnswlib.Index(space="ip", dim=DIM)
    if cache.is_file():  # the same data (n, seed) built before
        hnsw.load_index(str(cache), max_elements=n)
    else:
        hnsw.init_index(max_elements=n, M=M, ef_construction=ef_construction, random_seed=100)
        hnsw.add_items(data, np.arange(n), num_threads=threads)
        hnsw.save_index(str(cache))
    log(
        f"filtered: built {n:,} x {DIM} (ef_construction {ef_construction}) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    index = search_index(hnsw, n, DIM, EF)
    with_npy = search_index(hnsw, n, DIM, EF)
    with_npy.shards.shards[0]._emb = data  # as a local index has its embeddings.npy (memory-mapped)
    with_file = search_index(hnsw, n, DIM, EF)
    with_file.shards.shards[0]._file = HnswVectors(cache, n, DIM)  # as an index loaded from S3
    rows = []
    for sel in selectivities:
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, max(K, round(sel * n)), replace=False)] = True
        ways = {}
        for way, idx, fn in (
            ("hnsw", index, _hnsw_way),
            ("exact", index, _exact_way),
            ("exact_file", with_file, _exact_way),
            ("exact_npy", with_npy, _exact_way),
        ):
            lat, labels = _timed(lambda q, f=fn, i=idx, m=mask: f(i, q, m), qs, cell_seconds)
            ways[way] = (float(np.percentile(lat, 50)), [list(map(int, r)) for r in labels])
        pairs = zip(ways["hnsw"][1], ways["exact_npy"][1], strict=False)  # the same queries, in order
        found = [len(set(a) & set(b)) / K for a, b in pairs]
        row: dict[str, Any] = {"selectivity": sel, "allowed": int(mask.sum())}
        row.update({way: p50 for way, (p50, _) in ways.items()})
        row["hnsw_recall"] = float(np.mean(found))
        in_place = max(ways["exact_npy"][0], ways["exact_file"][0])  # a local index, one loaded from S3
        row["faster"] = "exact" if in_place < ways["hnsw"][0] else "hnsw"
        row["chosen"] = "hnsw" if sel >= FILTER_EXACT_BELOW else "exact"
        rows.append(row)
        log(
            f"filtered: {sel:>6.1%} ({row['allowed']:>6,} items): hnsw filter {row['hnsw'] * 1e3:8.3f} ms "
            f"(recall {row['hnsw_recall']:.3f}), exact subset {row['exact'] * 1e3:8.3f} ms "
            f"({row['exact_file'] * 1e3:8.3f} ms from the HNSW file, {row['exact_npy'] * 1e3:8.3f} ms from "
            "embeddings.npy)"
        )
    return rows


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:4]]
    cache = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    run(*args[:1], **dict(zip(("queries", "ef_construction"), args[1:], strict=False)), cache=cache)
