"""Duplicate groups on publish, full vs incremental: ``python -m bench.duplicates_incremental [--n 20000]
[--change 0.01] [--threads N]``.

:func:`index_builder.version_write.write_version` over a local store twice: a first version of ``n``
vectors (bench.duplicates' collection: clustered, 1% near-copies), then a change of ``change`` of them
(half deleted or given a new vector, half added). Prints one JSON object: each publish's time and its
duplicate finder's, their ratios, and whether the updated groups equal a full computation of the final
collection (``find_duplicate_groups``)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import index_builder.version_write as version_write
from bench.duplicates import collection
from bench.vectors import DIM
from handler.core.cpus import usable_cpus
from handler.core.duplicates import DEFAULT_DUPLICATE_THRESHOLD, find_duplicate_groups, read_duplicates
from index_builder.publish import publish


def changed_collection(
    n: int, change: float, dim: int
) -> tuple[np.ndarray, list[dict[str, Any]], np.ndarray, list[dict[str, Any]]]:
    """The first version and the changed one (vectors, items)."""
    half = max(1, round(n * change / 2))
    pool = collection(n + half, dim)
    old, items = pool[:n], [{"id": i} for i in range(n)]
    rng = np.random.default_rng(0)
    pick = rng.choice(n, 2 * half, replace=False)
    deleted, changed = set(pick[: half // 2].tolist()), pick[half // 2 : half]
    new = old.copy()
    new[changed] = pool[rng.integers(0, n, len(changed))]  # changed: now a copy of another row
    keep = [i for i in range(n) if i not in deleted]
    new_items = [items[i] for i in keep] + [{"id": i} for i in range(n, n + half)]
    return old, items, np.concatenate([new[keep], pool[n:]]).astype(np.float32), new_items


def measure(
    n: int = 20_000, change: float = 0.01, threads: int | None = None, dim: int = DIM
) -> dict[str, Any]:
    threads = threads or usable_cpus()
    old, items, new, new_items = changed_collection(n, change, dim)
    setting = {"threshold": DEFAULT_DUPLICATE_THRESHOLD, "k": 16}
    fields = {"model_fingerprint": "sha256:" + "ab" * 32, "source": None, "duplicates": setting}
    spent: list[float] = []
    real = version_write.version_duplicate_groups

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = real(*args, **kwargs)
        spent.append(time.perf_counter() - t0)
        return out

    out: dict[str, Any] = {"n": n, "change": change, "threads": threads, "loadavg_before": os.getloadavg()}
    version_write.version_duplicate_groups = timed  # type: ignore[assignment]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, version, vectors, rows in (
                ("full", "v1", old, items),
                ("incremental", "v2", new, new_items),
            ):
                t0 = time.perf_counter()
                m = version_write.write_version(
                    tmp, version, vectors=vectors, items=rows, manifest_fields=fields, threads=threads
                )
                publish(tmp, version, m)
                out[f"{name}_publish_s"] = round(time.perf_counter() - t0, 2)
                out[f"{name}_duplicates_s"] = round(spent[-1], 3)
            got = [g["items"] for g in read_duplicates(Path(tmp) / "versions/v2/duplicates.jsonl")]
    finally:
        version_write.version_duplicate_groups = real  # type: ignore[assignment]
    ids = [it["id"] for it in new_items]
    expected = [[ids[x] for x in g.labels] for g in find_duplicate_groups(new, threads=threads)]
    out.update(
        groups=len(expected),
        groups_equal_full=got == expected,
        duplicates_ratio=round(out["incremental_duplicates_s"] / out["full_duplicates_s"], 4),
        publish_ratio=round(out["incremental_publish_s"] / out["full_publish_s"], 4),
        loadavg_after=os.getloadavg(),
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.duplicates_incremental", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--change", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    print(json.dumps(measure(args.n, args.change, args.threads)))


if __name__ == "__main__":
    main()
