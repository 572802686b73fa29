"""bench.duplicates: the duplicate-finder measure runs and finds the planted near-copies."""

from __future__ import annotations

from bench.duplicates import measure


def test_measure_finds_the_planted_copies() -> None:
    out = measure(n=2000, threads=1, dim=64)
    assert out["n"] == 2000 and out["hnsw_build_s"] > 0 and out["duplicates_s"] > 0
    assert 15 <= out["groups"] <= 20 and out["grouped_items"] >= 2 * out["groups"]  # 20 copies planted
