"""bench.search.tables and bench.search.goals: the committed search section is what they render from its
own stored results (the split of bench/search.py changed no heading, row or goal)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bench.common import Section
from bench.report import DEFAULT_DATA, read_previous
from bench.search import goals, tables


def _stored() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    section = read_previous(DEFAULT_DATA).get("sections", {}).get("search")
    if not section or section["data"]["params"]["queries"] != 1000:
        pytest.skip("no full-run search section in the data file")
    # the results as the measure holds them: JSON made the ef keys strings and sorted the query kinds
    results = [
        dict(r, hnsw={int(ef): _kinds_in_order(e) for ef, e in (r.get("hnsw") or {}).items()})
        for r in section["data"]["results"]
    ]
    return section, results


def _kinds_in_order(entry: dict[str, Any]) -> dict[str, Any]:
    if "recall_by_kind" not in entry:
        return entry
    kinds = entry["recall_by_kind"]
    return dict(entry, recall_by_kind={k: kinds[k] for k in ("text", "image")})


def test_tables_render_the_stored_body() -> None:
    section, results = _stored()
    sec = Section("search", section["title"])
    tables.add_latency(sec, results, section["data"]["params"]["queries"])
    tables.add_build(sec, results)
    assert sec.body == section["body"][: len(sec.body)]
    assert sec.body[2] == "### Index build"


def test_goals_render_the_stored_goals() -> None:
    section, results = _stored()
    sec = Section("search", section["title"])
    goals.add_goals(sec, results, 100_000)
    assert [dataclasses.asdict(g) for g in sec.goals] == section["goals"]
    assert sec.body == (section["body"][-len(sec.body) :] if sec.body else [])


def test_best_ef_is_the_smallest_reaching_the_recall_goal() -> None:
    hnsw = {16: {"recall": 0.9}, 32: {"recall": 0.995}, 64: {"recall": 0.999}}
    assert goals.best_ef({"hnsw": hnsw}) == (32, hnsw[32])
    low = {16: {"recall": 0.5}, 32: {"recall": 0.7}}
    assert goals.best_ef({"hnsw": low}) == (32, low[32])
    assert goals.best_ef({}) == (None, None)
