"""Item rows of imported embeddings: the column-wise parquet path gives the rows the row-by-row rules give."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from index_builder.errors import BuildError
from index_builder.item_rows import _row, jsonl_rows, parquet_rows

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _by_rows(data: dict[str, list[Any]], field: str) -> list[dict[str, Any]]:
    """The row-by-row rules on the same records (NaN is null, as parquet_rows reads it)."""
    out = []
    for n, values in enumerate(zip(*data.values(), strict=True)):
        record = {
            k: None if isinstance(v, float) and math.isnan(v) else v
            for k, v in zip(data, values, strict=True)
        }
        out.append(_row(record, field, "x", "row", n))
    return out


@pytest.mark.parametrize(
    "data",
    [
        {
            "id": [1, 2, 3],
            "url": ["u1", "u2", "u3"],
            "caption": ["a", None, "c"],
            "score": [0.5, float("nan"), 1.0],
        },
        {"id": ["a", "b"], "url": ["u1", None], "path": ["p1", "p2"]},  # uri from another field on row 1
        {"image_path": ["/i/1.jpg", "/i/2.jpg"], "caption": ["a", "b"]},  # id = image_path, kept as the uri
        {"id": [7, 8]},
    ],
)
def test_column_rows_equal_row_by_row_rules(tmp_path: Path, data: dict[str, list[Any]]) -> None:
    pq.write_table(pa.table(data), tmp_path / "m.parquet")
    rows = parquet_rows(tmp_path / "m.parquet", "m.parquet", None, "image_path", None)
    field = "id" if "id" in data else "image_path"
    assert rows == _by_rows(data, field)
    assert len({id(r["metadata"]) for r in rows}) == len(rows)  # no shared dicts


def test_parquet_bad_ids_named_by_row(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": ["a", None, "c"]}), tmp_path / "m.parquet")
    with pytest.raises(BuildError, match=r"m\.parquet row 1: no 'id'"):
        parquet_rows(tmp_path / "m.parquet", "m.parquet", None, "id", None)
    pq.write_table(pa.table({"name": ["a"]}), tmp_path / "n.parquet")
    with pytest.raises(BuildError, match=r"no 'key' column \(columns: name\); pass --id-field"):
        parquet_rows(tmp_path / "n.parquet", "n.parquet", "key", "id", None)


def test_parquet_bytes_column_dropped_with_a_warning(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1], "jpg": [b"\xff\xd8"]}), tmp_path / "m.parquet")
    warnings: list[str] = []
    assert parquet_rows(tmp_path / "m.parquet", "m", None, "id", warnings.append) == [
        {"id": 1, "uri": None, "metadata": {}}
    ]
    assert warnings == ["m: column 'jpg' holds bytes; not copied into the items' metadata"]


def test_jsonl_rows(tmp_path: Path) -> None:
    (tmp_path / "i.jsonl").write_text('{"id": "a", "uri": "s3://b/a.jpg", "tag": 1}\n\n{"id": 2}\n')
    assert jsonl_rows(tmp_path / "i.jsonl", "i", "id") == [
        {"id": "a", "uri": "s3://b/a.jpg", "metadata": {"tag": 1}},
        {"id": 2, "uri": None, "metadata": {}},
    ]
    (tmp_path / "j.jsonl").write_text('{"id": "a"}\n[1]\n')
    with pytest.raises(BuildError, match="j line 2: expected a JSON object, got list"):
        jsonl_rows(tmp_path / "j.jsonl", "j", "id")
