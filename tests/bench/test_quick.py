"""Smoke test of the benchmark suite: `python -m bench --quick` runs every measure at tiny sizes and writes
a report with every section. Asserts nothing about speed (goals are reported, never enforced)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import MEASURES
from bench.report import DEFAULT_DATA, DEFAULT_OUT, read_previous, render_data

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
    data = read_previous(out.with_suffix(".json"))
    assert set(data["sections"]) == set(MEASURES)
    assert "bench-data" not in text  # the numbers live in the data file, not in the report
    plots = tmp_path / "plots"
    for name in ("encode_latency.png", "search_latency_recall.png", "coldstart.png"):
        assert (plots / name).stat().st_size > 1000, name


def test_only_keeps_other_sections(tmp_path: Path) -> None:
    """--only replaces its own section and keeps the others (here: a fake earlier full-run section)."""
    from bench.common import Goal, Section
    from bench.report import merge, write_data

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
    out, data_path = tmp_path / "B.md", tmp_path / "B.json"
    sections, runs = merge({}, [old], run_old)
    write_data(data_path, sections, run_old, runs)
    new = Section("encode", MEASURES["encode"], body=["new encode"])
    run_new = dict(run_old, id="new", started="today", command="python -m bench --only encode")
    sections, runs = merge(read_previous(data_path), [new], run_new)
    text = render_data(write_data(data_path, sections, run_new, runs), out, tmp_path)
    assert "old footprint" in text and "new encode" in text
    assert "Kept from an earlier run (yesterday" in text
    assert text.index("## " + MEASURES["encode"]) < text.index("## " + MEASURES["footprint"])


def test_committed_report_is_rendered_from_the_data_file() -> None:
    """BENCHMARKS.md is exactly what `python -m bench.report` renders from bench/results.json."""
    from bench.common import PLOTS_DIR

    data = read_previous(DEFAULT_DATA)
    assert data, f"{DEFAULT_DATA} missing or unreadable"
    expected = render_data(data, DEFAULT_OUT, PLOTS_DIR)
    assert DEFAULT_OUT.read_text(encoding="utf-8") == expected, (
        "BENCHMARKS.md differs from its data file: run `python -m bench.report` (or `make bench`)"
    )


def test_legacy_report_data_block_is_read(tmp_path: Path) -> None:
    """A report written before the data file existed still seeds the next --only run."""
    import json

    run = {"started": "then", "command": "python -m bench", "quick": False}
    legacy = {"runs": {"r": run}, "sections": {}}
    out = tmp_path / "B.md"
    out.write_text("# Benchmarks\n<!-- bench-data" + json.dumps(legacy) + "bench-data -->\n")
    assert read_previous(tmp_path / "missing.json", legacy_report=out) == legacy
    assert read_previous(tmp_path / "missing.json") == {}
