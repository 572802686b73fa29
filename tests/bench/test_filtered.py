"""bench/filtered.py at a toy size: one row per selectivity, both ways agree, a cached index is reused."""

from __future__ import annotations

from pathlib import Path

from bench.filtered import run
from handler.core.shards import FILTER_EXACT_BELOW


def test_filtered_bench_small(tmp_path: Path) -> None:
    cache = tmp_path / "index.hnsw"
    rows = run(
        2000, selectivities=(1.0, 0.01), queries=4, threads=1, ef_construction=40, cache=cache, log=None
    )
    assert cache.is_file()
    assert [r["selectivity"] for r in rows] == [1.0, 0.01] and [r["allowed"] for r in rows] == [2000, 20]
    for r in rows:
        assert r["hnsw"] > 0 and r["exact"] > 0 and r["exact_npy"] > 0 and 0.8 <= r["hnsw_recall"] <= 1.0
        assert r["chosen"] == ("hnsw" if r["selectivity"] >= FILTER_EXACT_BELOW else "exact")
    again = run(2000, selectivities=(0.01,), queries=2, cache=cache, log=None)  # loaded, not built
    assert again[0]["allowed"] == 20
