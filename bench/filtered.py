"""Filtered search: latency vs the fraction of items a filter keeps, hnswlib's filtered search against an
exact scan over the kept subset (the two ways of :func:`handler.core.filtered_search.filtered_search`): the
measurement behind ``SWITCH_FRACTION``.

Data as bench/search.py: 512-d clustered vectors (the queries from the same distribution, not in the
index), HNSW M=16 / ef_construction=100, ef 128, k 10; one query per call (as the service), p50. The kept
subset is a uniform random sample of the labels (a folder or date filter is as good as random for the
graph). The exact scan reads its vectors from the HNSW index (``get_items``: an index loaded from S3 has
no embeddings.npy) or, with ``embeddings=True``, from an in-memory array (a local index).

``python -m bench.filtered [N]`` prints the table; the ``make bench`` search section calls :func:`run`.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from bench.search import DIM, build_hnsw, clustered, search_index, time_queries
from handler.core.filtered_search import SWITCH_FRACTION, _exact, _hnsw_filtered

SELECTIVITIES = (1.0, 0.3, 0.1, 0.03, 0.01, 0.001)
K = 10
EF = 128


def _hnsw_way(index: Any, q: np.ndarray, mask: np.ndarray) -> Any:
    found = _hnsw_filtered(index, q[None], K, EF, mask)
    assert found is not None
    return found[0][0]


def _exact_way(index: Any, q: np.ndarray, mask: np.ndarray) -> Any:
    return _exact(index, q[None], K, np.flatnonzero(mask))[0][0]


def run(
    n: int = 100_000,
    *,
    selectivities: tuple[float, ...] = SELECTIVITIES,
    queries: int = 40,
    threads: int = 2,
    seed: int = 0,
    embeddings: bool = False,
    log: Any = print,
) -> list[dict[str, Any]]:
    """One row per selectivity: ``selectivity``, ``allowed``, ``hnsw_p50`` / ``exact_p50`` (seconds),
    ``hnsw_recall`` (of the filtered HNSW top-k against the exact one), ``faster`` and ``chosen`` (the
    way :data:`SWITCH_FRACTION` picks)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    data = clustered(n, seed + 1, centres)
    qs = clustered(queries, seed + 2, centres)
    t0 = time.perf_counter()
    hnsw, _ = build_hnsw(data, threads)
    log(f"filtered: built {n:,} x {DIM} in {time.perf_counter() - t0:.1f}s")
    index = search_index(hnsw, n, DIM, EF)
    if embeddings:
        index._embeddings = data  # as a local index has its embeddings.npy
    rows = []
    for sel in selectivities:
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, max(K, round(sel * n)), replace=False)] = True
        ways = {}
        for way, fn in (("hnsw", _hnsw_way), ("exact", _exact_way)):
            lat, labels = time_queries(lambda q, f=fn, m=mask: f(index, q, m), qs)
            ways[way] = (float(np.percentile(lat, 50)), [list(map(int, r)) for r in labels])
        found = [len(set(a) & set(b)) / K for a, b in zip(ways["hnsw"][1], ways["exact"][1], strict=True)]
        row = {
            "selectivity": sel,
            "allowed": int(mask.sum()),
            "hnsw_p50": ways["hnsw"][0],
            "exact_p50": ways["exact"][0],
            "hnsw_recall": float(np.mean(found)),
            "faster": "exact" if ways["exact"][0] < ways["hnsw"][0] else "hnsw",
            "chosen": "hnsw" if sel >= SWITCH_FRACTION else "exact",
        }
        rows.append(row)
        log(
            f"filtered: {sel:>6.1%} ({row['allowed']:>6,} items): "
            f"hnsw filter {row['hnsw_p50'] * 1e3:8.3f} ms "
            f"(recall {row['hnsw_recall']:.3f}), exact subset {row['exact_p50'] * 1e3:8.3f} ms"
        )
    return rows


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, embeddings="--embeddings" in sys.argv)
