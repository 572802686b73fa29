"""bench.rebuild.throughput, goals and scaling: the committed build section is what they render from its
own stored results (the split of bench/rebuild.py changed no heading, row or goal)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from bench.common import Context, Section
from bench.rebuild import goals, scaling, throughput
from bench.report import DEFAULT_DATA, read_previous


def _stored(tmp_path: Path) -> tuple[dict[str, Any], Context]:
    section = read_previous(DEFAULT_DATA).get("sections", {}).get("build")
    if not section or next(iter(section["data"]["results"].values()))["n"] != 1000:
        pytest.skip("no full-run build section in the data file")
    cpus = next(iter(section["data"]["results"].values()))["cpus"]
    return section, Context(quick=False, work=tmp_path, plots=tmp_path, threads=cpus)


def test_report_renders_the_stored_body(tmp_path: Path) -> None:
    section, ctx = _stored(tmp_path)
    sec = Section("build", section["title"])
    throughput.add_table(sec, ctx, section["data"]["results"])
    # JSON made the worker counts strings
    steps = {p: {int(k): v for k, v in res.items()} for p, res in section["data"]["parallel_scaling"].items()}
    scaling.add_report(sec, ctx, 600, steps)
    assert sec.body == section["body"]
    assert sec.data["lambda_projection"] == section["data"]["lambda_projection"]


def test_goals_render_the_stored_goals() -> None:
    section = read_previous(DEFAULT_DATA).get("sections", {}).get("build")
    if not section:
        pytest.skip("no build section in the data file")
    rendered = goals.rebuild_goals(section["data"]["results"])
    assert [dataclasses.asdict(g) for g in rendered] == section["goals"]
