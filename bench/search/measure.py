"""One collection measured: the HNSW index (build, cold load, latency and recall@10 per ef through
``handler.core.search.SearchIndex``), exact search in numpy and baseline A (SQLite blobs + full scan)."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.baseline_sqlite import SqliteIndex
from bench.common import Context, rss_bytes
from bench.search.params import EF_CONSTRUCTION, EFS, K, M
from bench.vectors import exact_topk, recall


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak() -> int:
    from bench.common import peak_rss_bytes

    return peak_rss_bytes()


def build_hnsw(data: np.ndarray, threads: int, deadline: float | None = None) -> tuple[Any, dict[str, Any]]:
    """hnswlib exactly as index_builder.version_write.write_version builds it (space ip, random_seed 100), in
    chunks so that a deadline can stop it."""
    import hnswlib

    gc.collect()
    can_peak = _reset_peak()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=data.shape[1])
    index.init_index(max_elements=len(data), M=M, ef_construction=EF_CONSTRUCTION, random_seed=100)
    chunk = 50_000
    done = 0
    for s in range(0, len(data), chunk):
        index.add_items(data[s : s + chunk], np.arange(s, min(s + chunk, len(data))), num_threads=threads)
        done = min(s + chunk, len(data))
        if deadline is not None and time.perf_counter() > deadline and done < len(data):
            break
    seconds = time.perf_counter() - t0
    info = {
        "seconds": seconds,
        "added": done,
        "complete": done == len(data),
        "rate": done / seconds,
        "rss_delta": rss_bytes() - rss0,
        "peak_delta": (_peak() - rss0) if can_peak else None,
    }
    return index, info


def cold_load(scratch: Path, data: np.ndarray) -> dict[str, float]:
    """What loading this index costs a cold process: hnswlib reading index.hnsw, and the sha256 that
    handler.core.index.load_index(verify=True) computes over a local version's files (index.hnsw and
    embeddings.npy, the two big ones), timed on the files themselves."""
    import hnswlib

    from handler.core.bundle import sha256_file

    np.save(scratch / "embeddings.npy", data, allow_pickle=False)
    t0 = time.perf_counter()
    sha256_file(scratch / "index.hnsw")
    sha256_file(scratch / "embeddings.npy")
    hash_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    idx = hnswlib.Index(space="ip", dim=data.shape[1])
    idx.load_index(str(scratch / "index.hnsw"), max_elements=len(data))
    load_s = time.perf_counter() - t0
    size = (scratch / "embeddings.npy").stat().st_size
    (scratch / "embeddings.npy").unlink()
    return {"hnsw_load_s": load_s, "sha256_s": hash_s, "embeddings_file": size}


def search_index(index: Any, n: int, dim: int, ef: int) -> Any:
    from handler.core.search import SearchIndex

    manifest = {"version": "bench", "dim": dim, "count": n, "model_fingerprint": "sha256:bench", "ef": ef}
    return SearchIndex(manifest, index, [{"id": i} for i in range(n)])


def time_queries(fn: Any, queries: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    lat, res = np.empty(len(queries)), []
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        r = fn(q)
        lat[i] = time.perf_counter() - t0
        res.append(r)
    return lat, res


def bench_dataset(
    name: str,
    data: np.ndarray,
    queries: np.ndarray,
    ctx: Context,
    *,
    sqlite_ok: bool,
    numpy_queries: int,
    sqlite_queries: int,
    deadline_s: float | None = None,
    query_kinds: dict[str, slice] | None = None,
    hnsw: bool = True,
) -> dict[str, Any]:
    n = len(data)
    res: dict[str, Any] = {"name": name, "n": n, "queries": len(queries)}
    ctx.log(f"{name}: exact ground truth for {len(queries)} queries ...")
    truth = exact_topk(queries, data, K)
    scratch = ctx.scratch(f"search-{name}")
    if hnsw:
        _bench_hnsw(name, data, queries, truth, ctx, res, scratch, deadline_s, query_kinds)
    _bench_exact(name, data, queries, truth, ctx, res, scratch, sqlite_ok, numpy_queries, sqlite_queries)
    return res


def _bench_hnsw(
    name: str,
    data: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    ctx: Context,
    res: dict[str, Any],
    scratch: Path,
    deadline_s: float | None,
    query_kinds: dict[str, slice] | None,
) -> None:
    n = len(data)
    ctx.log(f"{name}: building HNSW (M={M}, ef_construction={EF_CONSTRUCTION}, {ctx.threads} threads) ...")
    deadline = None if deadline_s is None else time.perf_counter() + deadline_s
    index, build = build_hnsw(data, ctx.threads, deadline)
    res["build"] = build
    if not build["complete"]:
        ctx.log(f"{name}: build stopped at {build['added']:,} of {n:,} (deadline)")
        return
    index.save_index(str(scratch / "index.hnsw"))
    res["index_file"] = (scratch / "index.hnsw").stat().st_size
    res["cold_load"] = cold_load(scratch, data)
    (scratch / "index.hnsw").unlink()
    ctx.log(f"{name}: built in {build['seconds']:.1f}s ({build['rate']:,.0f} vectors/s)")
    si = search_index(index, n, data.shape[1], EFS[0])
    res["hnsw"] = {}
    for ef in EFS:
        lat, hits = time_queries(lambda q, ef=ef: si.search(q, K, ef=ef), queries)
        labels = [[h.label for h in row[0]] for row in hits]
        index.set_ef(ef)
        raw_lat, _ = time_queries(lambda q: index.knn_query(q[None], k=K, num_threads=1), queries[:200])
        entry = {
            "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)),
            "recall": recall(labels, truth),
            "raw_p50": float(np.percentile(raw_lat, 50)),
        }
        if query_kinds:
            entry["recall_by_kind"] = {k: recall(labels[s], truth[s]) for k, s in query_kinds.items()}
        res["hnsw"][ef] = entry
        ctx.log(f"{name}: ef={ef}: p50 {entry['p50'] * 1e3:.3f} ms, recall@10 {entry['recall']:.4f}")


def _bench_exact(
    name: str,
    data: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    ctx: Context,
    res: dict[str, Any],
    scratch: Path,
    sqlite_ok: bool,
    numpy_queries: int,
    sqlite_queries: int,
) -> None:
    n = len(data)
    gc.collect()
    # ---- numpy exact (matrix in memory)
    nq = min(numpy_queries, len(queries))
    lat, found = time_queries(
        lambda q: np.argsort(-(data @ q))[:K] if n <= 20_000 else _argtop(data @ q, K), queries[:nq]
    )
    res["numpy"] = {
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "recall": recall(found, truth[:nq]),
        "queries": nq,
    }
    ctx.log(f"{name}: numpy exact p50 {res['numpy']['p50'] * 1e3:.1f} ms")
    # ---- baseline A: SQLite blobs + full scan
    if sqlite_ok:
        db_path = scratch / "baseline_a.sqlite"
        db_path.unlink(missing_ok=True)
        db = SqliteIndex(db_path)
        t0 = time.perf_counter()
        db.add_vectors(data)
        insert_s = time.perf_counter() - t0
        nq = min(sqlite_queries, len(queries))
        gc.collect()
        can_peak = _reset_peak()
        rss0 = rss_bytes()
        lat, found = time_queries(lambda q: [r[0] for r in db.search(q, K)], queries[:nq])
        res["sqlite"] = {
            "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)),
            "recall": recall(found, truth[:nq]),
            "queries": nq,
            "insert_s": insert_s,
            "file": db_path.stat().st_size,
            "query_peak_delta": (_peak() - rss0) if can_peak else None,
        }
        db.close()
        db_path.unlink(missing_ok=True)
        ctx.log(f"{name}: baseline A (SQLite scan) p50 {res['sqlite']['p50'] * 1e3:.0f} ms")


def _argtop(scores: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part])]
