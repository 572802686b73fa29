"""Quick measurements behind the shard defaults (docs/formats.md, "Index"; issue 15).

    python scripts/measure_shards.py threads [--n 50000] [--shards 4]
        one query per call over K shards: p50 with 1 thread (shards in turn) vs K threads (ShardSet)
    python scripts/measure_shards.py build [--n 100000] [--shards 4]
        K shards built in turn with every thread vs in a pool of K builders with one thread each

Data: bench.search.clustered (512-d, 1000 Gaussian clusters), as in BENCHMARKS.md. M and ef_construction:
``python -m bench --only params`` (BENCHMARKS.md, "HNSW parameters").
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bench.vectors import clustered
from handler.core.cpus import usable_cpus
from handler.core.shards import Shard, ShardSet

DIM = 512


def _data(n: int, queries: int = 500) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return clustered(n, 1, centres), clustered(queries, 2, centres)


def _build(data: np.ndarray, M: int, efc: int, threads: int) -> Any:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=data.shape[1])
    index.init_index(max_elements=len(data), M=M, ef_construction=efc, random_seed=100)
    index.add_items(data, np.arange(len(data)), num_threads=threads)
    return index


def _p50(fn: Any, queries: np.ndarray) -> float:
    lat = []
    for q in queries:
        t = time.perf_counter()
        fn(q[None])
        lat.append(time.perf_counter() - t)
    return float(np.median(lat) * 1000)


def threads(n: int, k: int) -> None:
    data, queries = _data(n * k)
    shards = [
        Shard(_build(data[i * n : (i + 1) * n], 16, 100, usable_cpus()), i * n, n, (), 64) for i in range(k)
    ]
    pooled = ShardSet(shards)

    def in_turn(q: np.ndarray) -> None:  # the K shards one after another in the calling thread
        for s in shards:
            s.knn(q, 10, 64)

    one = ShardSet([Shard(_build(data, 16, 100, usable_cpus()), 0, n * k, (), 64)])
    variants = {
        "1 thread (shards in turn)": in_turn,
        f"{k} threads (ShardSet)": lambda q: pooled.search(q, 10, 64),
        f"one index of {n * k}": lambda q: one.search(q, 10, 64),
    }
    lat: dict[str, list[float]] = {name: [] for name in variants}
    for q in queries:  # interleaved, so that the load of a shared machine hits every variant alike
        for name, fn in variants.items():
            t = time.perf_counter()
            fn(q[None])
            lat[name].append(time.perf_counter() - t)
    print(f"{k} shards x {n}, ef 64, one query per call, p50 ms:")
    for name, values in lat.items():
        print(f"  {name}: {np.median(values[10:]) * 1000:.3f}")


def build(n: int, k: int) -> None:
    data, _ = _data(n, 1)
    parts = np.array_split(data, k)
    t = time.perf_counter()
    for p in parts:
        _build(p, 16, 200, usable_cpus())
    in_turn = time.perf_counter() - t
    t = time.perf_counter()
    with ThreadPoolExecutor(k) as pool:
        list(pool.map(lambda p: _build(p, 16, 200, 1), parts))
    pooled = time.perf_counter() - t
    print(
        f"{k} shards of {n // k}: in turn, {usable_cpus()} threads each {in_turn:.1f} s; "
        f"pool of {k} x 1 thread {pooled:.1f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("threads", "build"))
    ap.add_argument("--n", type=int)
    ap.add_argument("--shards", type=int, default=4)
    a = ap.parse_args()
    if a.what == "threads":
        threads(a.n or 50_000, a.shards)
    else:
        build(a.n or 100_000, a.shards)


if __name__ == "__main__":
    main()
