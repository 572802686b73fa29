"""The benchmark code stays in small modules (issue 12: none over ~350 lines; a measure with more to say
is a package of one module per job, as bench/encode/, bench/search/ and bench/rebuild/ are)."""

from __future__ import annotations

from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
MAX_LINES = 350


def test_no_bench_module_over_the_limit() -> None:
    sizes = {
        p.relative_to(BENCH).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
        for p in BENCH.rglob("*.py")
        if p.relative_to(BENCH).parts[0] != "out"  # caches and scratch (gitignored)
    }
    assert "search/__init__.py" in sizes and "rebuild/__init__.py" in sizes
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
