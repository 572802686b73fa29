"""handler.core.filters: each filter part compiled into a mask over labels; rows without a field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from handler.core.filters import FilterSpec, InvalidFilterError, Range, compile_mask, date_bound, epoch_of


class _Index:
    def __init__(self, items: list[dict[str, Any]]):
        self.items = items


ROWS: list[dict[str, Any]] = [
    {
        "id": "photos/2024/a.jpg",
        "uri": "/c/photos/2024/a.jpg",
        "ext": "jpg",
        "type": "image/jpeg",
        "width": 4000,
        "height": 3000,
        "taken_at": "2024-05-01T12:00:00",
        "taken_at_source": "exif",
        "camera": "Canon EOS 5D",
        "gps": True,
        "metadata": {"album": "x", "tags": ["sea", "sun"], "year": 2024},
    },
    {
        "id": "photos/2023/b.png",
        "uri": "/c/photos/2023/b.png",
        "ext": "png",
        "type": "image/png",
        "width": 64,
        "height": 64,
        "taken_at": "2023-12-31T23:30:00Z",
        "taken_at_source": "mtime",
        "gps": False,
        "metadata": {"album": "y", "year": "2024"},
    },
    {  # a row of an index built before the image facts: only id, uri, size, width, height, metadata
        "id": "scans/c.JPEG",
        "uri": "/c/scans/c.JPEG",
        "width": 800,
        "height": 600,
        "metadata": {"album": "x", "flag": True},
    },
    {"id": 7, "uri": "s3://b/k/d.webp", "metadata": {"year": 2024.0}},
]


def _mask(**spec: Any) -> list[int]:
    return [int(i) for i in np.flatnonzero(compile_mask(_Index(ROWS), FilterSpec(**spec)))]


def test_empty_spec_allows_everything() -> None:
    assert _mask() == [0, 1, 2, 3]


def test_path_prefix_any_of_and_not_numeric_ids() -> None:
    assert _mask(path_prefix=("photos/",)) == [0, 1]
    assert _mask(path_prefix=("photos/2023/", "scans/")) == [1, 2]
    assert _mask(path_prefix=("photos/2024/a.jpg",)) == [0]
    assert _mask(path_prefix=("photo/",)) == []
    assert _mask(path_prefix=("7",)) == []  # ids that are not strings are not paths


def test_path_prefix_with_the_highest_code_point() -> None:
    rows = [{"id": "a\U0010ffffb"}, {"id": "a\U0010ffff"}, {"id": "b"}]
    assert list(np.flatnonzero(compile_mask(_Index(rows), FilterSpec(path_prefix=("a\U0010ffff",))))) == [
        0,
        1,
    ]


def test_ext_is_case_insensitive_and_derived_for_old_rows() -> None:
    assert _mask(ext=("jpg",)) == [0]
    assert _mask(ext=("JPEG", "webp")) == [2, 3]  # rows without "ext": from the uri
    assert _mask(ext=("gif",)) == []


def test_type_camera_gps() -> None:
    assert _mask(type=("IMAGE/PNG",)) == [1]
    assert _mask(camera=("Canon EOS 5D", "Nikon")) == [0]
    assert _mask(camera=("canon eos 5d",)) == []  # exact
    assert _mask(gps=True) == [0]
    assert _mask(gps=False) == [1]  # rows without the field match neither


def test_taken_range_naive_is_utc_and_missing_never_matches() -> None:
    day = (date_bound("2024-05-01", end=False), date_bound("2024-05-01", end=True))
    assert _mask(taken=Range(*day)) == [0]
    assert _mask(taken=Range(date_bound("2024-01-01", end=False), None)) == [0]
    assert _mask(taken=Range(None, date_bound("2023-12-31", end=True))) == [1]
    assert _mask(taken=Range(epoch_of("2023-12-31T23:30:00+00:00"), epoch_of("2023-12-31T23:30:00"))) == [1]
    assert _mask(taken=Range(None, None)) == [0, 1]  # only rows that have a date


def test_width_height_inclusive() -> None:
    assert _mask(width=Range(64, 800)) == [1, 2]
    assert _mask(width=Range(65, None), height=Range(None, 600)) == [2]
    assert _mask(height=Range(3000, 3000)) == [0]


def test_meta_equality_in_lists_and_types() -> None:
    assert _mask(meta=(("album", ("x",)),)) == [0, 2]
    assert _mask(meta=(("album", ("x", "y")),)) == [0, 1, 2]
    assert _mask(meta=(("tags", ("sun",)),)) == [0]  # a list in the item: any element
    assert _mask(meta=(("year", (2024,)),)) == [0, 3]  # 2024 == 2024.0, not "2024"
    assert _mask(meta=(("year", ("2024",)),)) == [1]
    assert _mask(meta=(("flag", (True,)),)) == [2]
    assert _mask(meta=(("flag", (1,)),)) == []  # a boolean is not a number
    assert _mask(meta=(("nope", ("x",)),)) == []
    assert _mask(meta=(("album", ("x",)), ("year", (2024,)))) == [0]  # parts AND


def test_parts_combine_with_and() -> None:
    assert _mask(path_prefix=("photos/",), ext=("png",), width=Range(None, 100)) == [1]
    assert _mask(path_prefix=("photos/",), ext=("gif",)) == []


def test_columns_are_built_once_per_index() -> None:
    index = _Index([dict(r) for r in ROWS])
    assert list(np.flatnonzero(compile_mask(index, FilterSpec(ext=("png",))))) == [1]
    index.items[0]["ext"] = "png"  # items are read-only once loaded: the cached column is kept
    assert list(np.flatnonzero(compile_mask(index, FilterSpec(ext=("png",))))) == [1]
    assert list(np.flatnonzero(compile_mask(_Index(index.items), FilterSpec(ext=("png",))))) == [0, 1]


def test_date_bound() -> None:
    assert date_bound("2024-01-01", end=False) == epoch_of("2024-01-01T00:00:00Z")
    assert date_bound("2024-01-01", end=True) == pytest.approx(epoch_of("2024-01-02T00:00:00Z") - 1e-3)
    assert date_bound("2024-01-01T10:00:00+02:00", end=True) == epoch_of("2024-01-01T08:00:00Z")
    for bad in ("2024-13-01", "yesterday", "2024-02-30", ""):
        with pytest.raises(InvalidFilterError, match="not a date"):
            date_bound(bad, end=False)


def test_fields_for_logs_name_no_values() -> None:
    spec = FilterSpec(ext=("jpg",), taken=Range(0, None), meta=(("secret name", ("v",)),))
    assert spec.fields() == ["ext", "taken", "meta"]
