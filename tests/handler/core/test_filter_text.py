"""handler.core.filter_text: the compact filter syntax -> the JSON form."""

from __future__ import annotations

import pytest

from handler.core.filter_text import parse_compact
from handler.core.filters import InvalidFilterError


def test_every_term() -> None:
    text = (
        "path:photos/2024/ path:scans/ ext:jpg,PNG type:image/png taken:2024-01-01..2024-12-31 width:>=100 "
        'height:100..4000 camera:"Canon EOS 5D",Nikon gps:no meta.album:holidays meta.year:2023,2024 '
        "meta.flag:true meta.code:007x"
    )
    assert parse_compact(text) == {
        "path_prefix": ["photos/2024/", "scans/"],
        "ext": ["jpg", "PNG"],
        "type": ["image/png"],
        "taken": {"from": "2024-01-01", "to": "2024-12-31"},
        "width": {"min": 100},
        "height": {"min": 100, "max": 4000},
        "camera": {"in": ["Canon EOS 5D", "Nikon"]},
        "gps": False,
        "meta": {"album": "holidays", "year": {"in": [2023, 2024]}, "flag": True, "code": "007x"},
    }


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("width:<=4000", {"width": {"max": 4000}}),
        ("width:>99", {"width": {"min": 100}}),
        ("width:<101", {"width": {"max": 100}}),
        ("width:640", {"width": {"min": 640, "max": 640}}),
        ("width:..50", {"width": {"max": 50}}),
        ("taken:2024-05-01", {"taken": {"from": "2024-05-01", "to": "2024-05-01"}}),
        ("taken:2024-05-01..", {"taken": {"from": "2024-05-01"}}),
        ("taken:<=2024-05-01", {"taken": {"to": "2024-05-01"}}),
        ("gps:YES", {"gps": True}),
        ("camera:Canon", {"camera": "Canon"}),
        ("", {}),
    ],
)
def test_forms(term: str, expected: dict[str, object]) -> None:
    assert parse_compact(term) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour:red", "unknown filter term 'colour'"),
        ("ext", "expected name:value"),
        ("ext:", "expected name:value"),
        ("ext:jpg ext:png", "given twice"),
        ("meta.a:1 meta.a:2", "given twice"),
        ("ext:jpg,,png", "empty value"),
        ("width:wide", "not a whole number"),
        ("width:..", "at least one bound"),
        ("taken:..", "at least one date"),
        ("gps:maybe", "gps:yes or gps:no"),
        ('camera:"open', "filter text"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidFilterError, match=message):
        parse_compact(text)
