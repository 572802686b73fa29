"""Smoke test of the benchmark suite: `python -m bench --quick` runs every measure at tiny sizes and writes
a report with every section. Asserts nothing about speed (goals are reported, never enforced)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import MEASURES
from bench.report import read_previous

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_mode_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--work", str(tmp_path / "work")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"bench --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    text = out.read_text(encoding="utf-8")
    assert "Quick mode" in text
    assert "## Goals" in text
    for title in MEASURES.values():
        assert f"## {title}" in text, f"section {title!r} missing"
    assert "measure failed" not in text
    data = read_previous(out)
    assert set(data["sections"]) == set(MEASURES)
    plots = tmp_path / "plots"
    for name in ("encode_latency.png", "search_latency_recall.png", "coldstart.png"):
        assert (plots / name).stat().st_size > 1000, name


def test_only_keeps_other_sections(tmp_path: Path) -> None:
    """--only replaces its own section and keeps the others (here: a fake earlier full-run section)."""
    from bench.common import Goal, Section
    from bench.report import merge, render

    old = Section(
        "footprint",
        MEASURES["footprint"],
        body=["old footprint"],
        goals=[Goal("g", "t", "m", True)],
        data={"_run": "old"},
    )
    run_old = {
        "id": "old",
        "started": "yesterday",
        "command": "python -m bench",
        "quick": False,
        "machine": {},
        "threads": 2,
        "seconds": 1.0,
        "load_start": (0, 0, 0),
        "load_end": (0, 0, 0),
    }
    out = tmp_path / "B.md"
    sections, runs = merge({}, [old], run_old)
    out.write_text(render(sections, run_old, runs, out, tmp_path))
    new = Section("encode", MEASURES["encode"], body=["new encode"])
    run_new = dict(run_old, id="new", started="today", command="python -m bench --only encode")
    sections, runs = merge(read_previous(out), [new], run_new)
    text = render(sections, run_new, runs, out, tmp_path)
    assert "old footprint" in text and "new encode" in text
    assert "Kept from an earlier run (yesterday" in text
    assert text.index("## " + MEASURES["encode"]) < text.index("## " + MEASURES["footprint"])
