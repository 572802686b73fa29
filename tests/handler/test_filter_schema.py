"""handler.filter_schema: the strict filter model, its errors, and the spec it gives."""

from __future__ import annotations

from typing import Any

import pytest

from handler.core.filters import InvalidFilterError, Range, date_bound
from handler.filter_schema import FilterJSON, parse_filter


def test_spec_from_json_and_from_text_agree() -> None:
    given = {
        "path_prefix": "photos/",
        "ext": ["JPG", ".png"],
        "taken": {"from": "2024-01-01", "to": "2024-12-31"},
        "width": {"min": 100},
        "camera": {"in": ["A", "B"]},
        "gps": True,
        "meta": {"album": "x", "year": {"in": [2023, 2024]}},
    }
    spec = parse_filter(given)
    assert spec.path_prefix == ("photos/",) and spec.ext == ("jpg", "png") and spec.gps is True
    assert spec.taken == Range(date_bound("2024-01-01", end=False), date_bound("2024-12-31", end=True))
    assert spec.width == Range(100, None) and spec.height is None
    assert spec.camera == ("A", "B") and spec.meta == (("album", ("x",)), ("year", (2023, 2024)))
    assert spec.echo["camera"] == {"in": ["A", "B"]} and spec.echo["taken"]["from"] == "2024-01-01"
    text = "path:photos/ ext:JPG,.png taken:2024-01-01..2024-12-31 width:>=100 camera:A,B gps:yes "
    text += "meta.album:x meta.year:2023,2024"
    assert parse_filter(text) == spec
    assert parse_filter('{"ext": "jpg"}') == parse_filter({"ext": "jpg"})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"colour": "red"}, "filter.colour: unknown field; allowed: path_prefix, ext, type, taken"),
        ({"taken": {"since": "2024"}}, "filter.taken.since: unknown field; allowed: from, to"),
        ({"taken": {"from": "2024-13-01"}}, "filter.taken.from: not a date: '2024-13-01'"),
        ({"taken": {"from": "2024-02-01", "to": "2024-01-01"}}, "filter.taken: 'from' 2024-02-01 is after"),
        ({"taken": {}}, "filter.taken: give 'from' and/or 'to'"),
        ({"width": {"min": 10, "max": 5}}, "filter.width: 'min' 10 is greater than 'max' 5"),
        ({"width": {"min": -1}}, "filter.width.min: Input should be greater than or equal to 0"),
        ({"width": {"min": "10"}}, "filter.width.min: Input should be a valid integer"),
        ({"height": {"least": 1}}, "filter.height.least: unknown field; allowed: min, max"),
        ({"ext": []}, "filter.ext"),
        ({"ext": ["x" * 65]}, "filter.ext"),
        ({"gps": "yes"}, "filter.gps: Input should be a valid boolean"),
        ({"meta": {"a": {"in": []}}}, "filter.meta.a"),
        ({"meta": {"a": {"eq": 1}}}, "filter.meta.a"),
        ({"meta": {"a": None}}, "filter.meta.a"),
        ({"meta": {f"f{i}": 1 for i in range(21)}}, "filter.meta"),
        ({"camera": {"in": list(range(101))}}, "filter.camera"),
        ([1], "'filter' must be an object"),
        (3, "'filter' must be an object"),
        ("{nope", "'filter' is not valid JSON"),
        ("colour:red", "unknown filter term 'colour'"),
        ("x" * 5000, "over 4096 characters"),
    ],
)
def test_errors(value: Any, message: str) -> None:
    with pytest.raises(InvalidFilterError) as e:
        parse_filter(value)
    assert message in e.value.message, e.value.message
    assert e.value.code == "invalid_filter" and e.value.status == 400


def test_schema_documents_the_parts() -> None:
    schema = FilterJSON.model_json_schema()
    assert set(schema["properties"]) == {
        "path_prefix",
        "ext",
        "type",
        "taken",
        "width",
        "height",
        "camera",
        "gps",
        "meta",
    }
    assert "from" in schema["$defs"]["DateRange"]["properties"]
    assert "in" in schema["$defs"]["AnyOf"]["properties"]
