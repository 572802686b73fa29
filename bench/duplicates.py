"""Duplicate-finder cost at build time: ``python -m bench.duplicates [--n 100000] [--threads N]``.

Clustered random vectors (bench.vectors' model of a photo collection: 1000 centres, within-cluster cosine
~0.8) with 1% of them given a near-copy (cosine ~0.999: a re-encoded copy), an hnswlib index built
with the builder's defaults (M=16, ef_construction=200), then
:func:`handler.core.duplicates.find_duplicate_groups` on that index, the way
``index_builder.version_write.write_version`` runs it. Prints one JSON object: both times and their ratio."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from bench.vectors import DIM, clustered
from handler.core.cpus import usable_cpus
from handler.core.duplicates import DEFAULT_DUPLICATE_THRESHOLD, find_duplicate_groups


def collection(n: int, dim: int = DIM, seed: int = 0, copy_fraction: float = 0.01) -> np.ndarray:
    """``n`` L2-normalised vectors; the last ``copy_fraction`` of them are near-copies of earlier ones."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    copies = int(n * copy_fraction)
    data = clustered(n - copies, seed, centres)
    src = data[rng.integers(0, len(data), copies)]
    near = src + (0.04 / np.sqrt(dim)) * rng.standard_normal(src.shape).astype(np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    return np.concatenate([data, near]).astype(np.float32)


def measure(n: int = 100_000, threads: int | None = None, dim: int = DIM) -> dict[str, Any]:
    import hnswlib

    threads = threads or usable_cpus()
    vectors = collection(n, dim)
    t0 = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=16, ef_construction=200, random_seed=100)
    index.add_items(vectors, np.arange(n), num_threads=threads)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    groups = find_duplicate_groups(vectors, DEFAULT_DUPLICATE_THRESHOLD, index=index, threads=threads)
    find_s = time.perf_counter() - t0
    return {
        "n": n,
        "dim": dim,
        "threads": threads,
        "threshold": DEFAULT_DUPLICATE_THRESHOLD,
        "hnsw_build_s": round(build_s, 2),
        "duplicates_s": round(find_s, 2),
        "duplicates_vs_build": round(find_s / build_s, 3),
        "groups": len(groups),
        "grouped_items": sum(len(g.labels) for g in groups),
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.duplicates", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    print(json.dumps(measure(args.n, args.threads)))


if __name__ == "__main__":
    main()
