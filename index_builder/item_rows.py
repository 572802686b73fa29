"""Item rows of imported embeddings, from a JSONL file (one object per line) or a parquet file (one row per
vector): ``{"id", "uri", "metadata"}``.

The id is the ``id_field`` value (a non-empty string or an integer; the field leaves the metadata only when it
is ``id``); the ``uri`` is the first of :data:`URI_FIELDS` holding a non-empty string (it leaves the
metadata); the other non-null fields are the metadata. Parquet files are converted column by column (NaN ->
None, dates -> ISO strings, bytes columns dropped with a warning); when the uri column is complete, rows are
assembled from whole columns, without per-field Python work.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from index_builder.errors import BuildError

__all__ = ["URI_FIELDS", "jsonl_rows", "parquet_rows"]

#: The first of these fields holding a non-empty string becomes the item's ``uri`` (and leaves metadata).
URI_FIELDS = ("uri", "url", "image_path", "path")


def jsonl_rows(path: Path, where: str, id_field: str) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise BuildError(f"{where} line {n}: not JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise BuildError(f"{where} line {n}: expected a JSON object, got {type(record).__name__}")
            rows.append(_row(record, id_field, where, "line", n))
    return rows


def _bad_id(item_id: Any) -> bool:
    return type(item_id) not in (str, int) or item_id == ""  # bool, float, None, nested: refused


def _row(record: dict[str, Any], field: str, where: str, unit: str, n: int) -> dict[str, Any]:
    item_id = record.pop(field, None) if field == "id" else record.get(field)
    if item_id is None:
        raise BuildError(f"{where} {unit} {n}: no {field!r} (every vector needs an id)")
    if isinstance(item_id, np.integer):
        item_id = int(item_id)
    if _bad_id(item_id):
        raise BuildError(f"{where} {unit} {n}: id {item_id!r} must be a non-empty string or an integer")
    uri_key = next((k for k in URI_FIELDS if isinstance(record.get(k), str) and record[k]), None)
    uri = record.pop(uri_key) if uri_key is not None else None
    return {"id": item_id, "uri": uri, "metadata": {k: v for k, v in record.items() if v is not None}}


def parquet_rows(
    path: Path, where: str, id_field: str | None, default_field: str, warn: Callable[[str], None] | None
) -> list[dict[str, Any]]:
    """Rows of a parquet file; ``id_field`` None: ``id`` when there is such a column, else
    ``default_field``."""
    columns = _parquet_columns(path, where, warn)
    field = id_field or ("id" if "id" in columns else default_field)
    if field not in columns:
        raise BuildError(
            f"{where}: no {field!r} column (columns: {', '.join(columns) or 'none'}); pass "
            "--id-field to name the column that holds each vector's id"
        )
    ids = columns[field]
    for n, item_id in enumerate(ids):
        if item_id is None or _bad_id(item_id):
            _row(dict(zip(columns, (c[n] for c in columns.values()), strict=True)), field, where, "row", n)
    uri_key = next((k for k in URI_FIELDS if k in columns), None)
    uris: list[Any] = columns[uri_key] if uri_key else [None] * len(ids)
    if uri_key is not None and not all(type(u) is str and u for u in uris):  # mixed: row by row
        names = list(columns)
        return [
            _row(dict(zip(names, values, strict=True)), field, where, "row", n)
            for n, values in enumerate(zip(*columns.values(), strict=True))
        ]
    meta_names = [k for k in columns if k != uri_key and not (k == field == "id")]
    meta_cols = [columns[k] for k in meta_names]
    if not meta_cols:
        metas: list[dict[str, Any]] = [{} for _ in ids]
    elif any(None in col for col in meta_cols):
        metas = [
            {k: v for k, v in zip(meta_names, values, strict=True) if v is not None}
            for values in zip(*meta_cols, strict=True)
        ]
    else:
        metas = [dict(zip(meta_names, values, strict=True)) for values in zip(*meta_cols, strict=True)]
    return [{"id": i, "uri": u, "metadata": m} for i, u, m in zip(ids, uris, metas, strict=True)]


def _parquet_columns(path: Path, where: str, warn: Callable[[str], None] | None) -> dict[str, list[Any]]:
    """Column name -> Python values (JSON-ready: NaN -> None, dates as ISO strings; bytes columns dropped)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise BuildError(
            f"{where}: reading parquet needs pyarrow (`pip install pyarrow`; requirements/index_builder.txt)"
        ) from None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise BuildError(f"{where}: not a readable parquet file ({e})") from None
    columns: dict[str, list[Any]] = {}
    for name in table.column_names:
        if name.startswith("__index_level_"):  # a pandas index written by to_parquet
            continue
        col = table.column(name)
        kind = col.type
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
            if warn is not None:
                warn(f"{where}: column {name!r} holds bytes; not copied into the items' metadata")
            continue
        if pa.types.is_floating(kind):
            arr = col.to_numpy(zero_copy_only=False).astype(np.float64)
            values = arr.tolist()
            for i in np.flatnonzero(~np.isfinite(arr)).tolist():
                values[i] = None
        elif pa.types.is_decimal(kind):
            values = col.cast(pa.float64()).to_pylist()
        elif pa.types.is_temporal(kind):
            values = [v.isoformat() if hasattr(v, "isoformat") else v for v in col.to_pylist()]
        else:
            values = col.to_pylist()
        columns[name] = values
    return columns
