"""bench.duplicates_incremental: both publishes run, and the updated groups equal a full computation."""

from __future__ import annotations

from bench.duplicates_incremental import measure


def test_measure_publishes_twice_and_the_groups_agree() -> None:
    out = measure(n=1000, change=0.02, threads=1, dim=32)
    assert out["full_duplicates_s"] > 0 and out["incremental_duplicates_s"] > 0
    assert out["groups"] >= 5 and out["groups_equal_full"] is True
