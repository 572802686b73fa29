"""Filters of a search: a validated :class:`FilterSpec` compiled into a boolean mask over an index's labels.

The item fields a filter reads (docs/formats.md, items.jsonl): the string ``id`` (``path_prefix``), ``ext``
(derived from the ``uri`` for rows built before the field existed), ``type``, ``taken_at``, ``width``,
``height``, ``camera``, ``gps`` and ``metadata.<name>``. A row without the field a filter names does not
match that filter. Each column is built on first use from the index's items and cached with the loaded
version (a :class:`SearchIndex` is one version), so a query costs numpy work over the labels plus a
dictionary lookup per requested value. The HTTP/CLI syntax is validated in :mod:`handler.filter_schema`;
the search over the mask is :mod:`handler.core.filtered_search`.
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

from handler.core.errors import BadInputError

__all__ = [
    "FilterSpec",
    "InvalidFilterError",
    "Range",
    "compile_mask",
    "date_bound",
    "epoch_of",
    "value_key",
]

Scalar = str | int | float | bool


class InvalidFilterError(BadInputError):
    code = "invalid_filter"


@dataclass(frozen=True)
class Range:
    """Inclusive bounds (None: open)."""

    lo: float | None = None
    hi: float | None = None


@dataclass(frozen=True)
class FilterSpec:
    """What an item must match (all given parts; a tuple of values means any of them)."""

    path_prefix: tuple[str, ...] = ()
    ext: tuple[str, ...] = ()
    type: tuple[str, ...] = ()
    taken: Range | None = None  # epoch seconds (naive times count as UTC)
    width: Range | None = None
    height: Range | None = None
    camera: tuple[Scalar, ...] = ()
    gps: bool | None = None
    meta: tuple[tuple[str, tuple[Scalar, ...]], ...] = ()
    echo: dict[str, Any] = field(default_factory=dict, compare=False)  # the spec as given (JSON)

    def fields(self) -> list[str]:
        """The filter's parts by name (for logs: never the values)."""
        names = [n for n in ("path_prefix", "ext", "type", "camera") if getattr(self, n)]
        names += [n for n in ("taken", "width", "height", "gps") if getattr(self, n) is not None]
        return names + (["meta"] if self.meta else [])  # metadata field names may be personal: not logged


# -- dates ----------------------------------------------------------------------------------------------


def epoch_of(value: Any) -> float | None:
    """Seconds since 1970 of an ISO 8601 date/time string (naive: UTC), or None when it is not one."""
    if not isinstance(value, str) or not 8 <= len(value) <= 40:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _is_day(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def date_bound(text: str, *, end: bool) -> float:
    """A ``taken`` bound: ``YYYY-MM-DD`` (as ``to``: the end of that day) or an ISO 8601 date-time."""
    stamp = epoch_of(text)
    if stamp is None:
        raise InvalidFilterError(
            f"not a date: {text[:40]!r} (use YYYY-MM-DD or an ISO 8601 date-time such as 2024-05-01T12:00:00)"
        )
    if end and _is_day(text):  # a whole day (2024-05-01): up to its last moment
        stamp += 86400 - 1e-3  # UTC days have no DST
    return stamp


# -- values ---------------------------------------------------------------------------------------------


def value_key(value: Any) -> tuple[Any, ...] | None:
    """The hashable key equality compares: booleans, numbers (1 == 1.0) and strings never equal each other."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        v = float(value)
        return ("n", v) if np.isfinite(v) else None
    if isinstance(value, str):
        return ("s", value)
    return None


def _keys(value: Any) -> Iterable[tuple[Any, ...]]:
    """An item value's keys: a list matches when any element does (e.g. ``tags``)."""
    for v in value if isinstance(value, list) else (value,):
        key = value_key(v)
        if key is not None:
            yield key


def _ext_of(row: dict[str, Any]) -> Any:
    if "ext" in row:
        return row["ext"]
    uri = row.get("uri")
    if not isinstance(uri, str):
        return None
    name = uri.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[1].lower() if "." in name.lstrip(".") else None


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# -- columns --------------------------------------------------------------------------------------------

Inverted = dict[tuple[Any, ...], np.ndarray]


class Columns:
    """The columns of one index's items, each built on first use (thread-safe) and then kept."""

    def __init__(self, items: Sequence[dict[str, Any]]):
        self._items = items
        self.count = len(items)
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _get(self, name: str, build: Callable[[], Any]) -> Any:
        if name not in self._cache:
            with self._lock:
                if name not in self._cache:
                    self._cache[name] = build()
        return self._cache[name]

    def paths(self) -> tuple[list[str], np.ndarray]:
        """The string ids, sorted, and their labels: a prefix is a contiguous run."""

        def build() -> tuple[list[str], np.ndarray]:
            pairs = sorted(
                (r["id"], label) for label, r in enumerate(self._items) if isinstance(r.get("id"), str)
            )
            return [p for p, _ in pairs], np.array([label for _, label in pairs], dtype=np.int64)

        result: tuple[list[str], np.ndarray] = self._get("path", build)
        return result

    def numbers(self, name: str, read: Callable[[dict[str, Any]], Any]) -> np.ndarray:
        """float64 per label; NaN where the row has no number (NaN compares false: no match)."""

        def build() -> np.ndarray:
            out = np.full(self.count, np.nan)
            for label, row in enumerate(self._items):
                v = read(row)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[label] = v
            return out

        result: np.ndarray = self._get(name, build)
        return result

    def inverted(self, name: str, read: Callable[[dict[str, Any]], Any]) -> Inverted:
        """value key -> labels holding it."""

        def build() -> Inverted:
            lists: dict[tuple[Any, ...], list[int]] = {}
            for label, row in enumerate(self._items):
                for key in _keys(read(row)):
                    lists.setdefault(key, []).append(label)
            return {k: np.array(v, dtype=np.int64) for k, v in lists.items()}

        result: Inverted = self._get(name, build)
        return result

    def meta_names(self) -> frozenset[str]:
        def build() -> frozenset[str]:
            names: set[str] = set()
            for row in self._items:
                meta = row.get("metadata")
                if isinstance(meta, dict):
                    names.update(meta)
            return frozenset(names)

        result: frozenset[str] = self._get("meta names", build)
        return result


_COLUMNS: weakref.WeakKeyDictionary[Any, Columns] = weakref.WeakKeyDictionary()
_COLUMNS_LOCK = threading.Lock()


def columns(index: Any) -> Columns:
    """The columns of a loaded index version (``index.items``), kept as long as the index object lives."""
    with _COLUMNS_LOCK:
        cols = _COLUMNS.get(index)
        if cols is None:
            cols = _COLUMNS[index] = Columns(index.items)
        return cols


# -- compiling ------------------------------------------------------------------------------------------


def _any_of(inv: Inverted, values: Iterable[Any], count: int) -> np.ndarray:
    mask = np.zeros(count, dtype=bool)
    for v in values:
        key = value_key(v)
        labels = inv.get(key) if key is not None else None
        if labels is not None:
            mask[labels] = True
    return mask


def _in_range(col: np.ndarray, r: Range) -> np.ndarray:
    mask: np.ndarray = ~np.isnan(col)
    if r.lo is not None:
        mask &= col >= r.lo
    if r.hi is not None:
        mask &= col <= r.hi
    return mask


def _prefixed(cols: Columns, prefixes: Sequence[str]) -> np.ndarray:
    keys, labels = cols.paths()
    mask = np.zeros(cols.count, dtype=bool)
    for p in prefixes:
        lo = bisect.bisect_left(keys, p)
        hi = bisect.bisect_left(keys, p + "\U0010ffff", lo)  # any string starting with p sorts before this
        while hi < len(keys) and keys[hi].startswith(p):  # ...unless it continues with U+10FFFF itself
            hi += 1
        mask[labels[lo:hi]] = True
    return mask


def _meta(name: str) -> Callable[[dict[str, Any]], Any]:
    def read(row: dict[str, Any]) -> Any:
        meta = row.get("metadata")
        return meta.get(name) if isinstance(meta, dict) else None

    return read


def compile_mask(index: Any, spec: FilterSpec) -> np.ndarray:
    """``bool[count]``: True for the labels whose item matches every part of ``spec``."""
    cols = columns(index)
    mask = np.ones(cols.count, dtype=bool)
    if spec.path_prefix:
        mask &= _prefixed(cols, spec.path_prefix)
    if spec.ext:
        mask &= _any_of(cols.inverted("ext", lambda r: _lower(_ext_of(r))), map(_lower, spec.ext), cols.count)
    if spec.type:
        inv = cols.inverted("type", lambda r: _lower(r.get("type")))
        mask &= _any_of(inv, map(_lower, spec.type), cols.count)
    if spec.camera:
        mask &= _any_of(cols.inverted("camera", lambda r: r.get("camera")), spec.camera, cols.count)
    if spec.gps is not None:
        mask &= _any_of(cols.inverted("gps", lambda r: r.get("gps")), (spec.gps,), cols.count)
    if spec.taken is not None:
        mask &= _in_range(cols.numbers("taken", lambda r: epoch_of(r.get("taken_at"))), spec.taken)
    if spec.width is not None:
        mask &= _in_range(cols.numbers("width", lambda r: r.get("width")), spec.width)
    if spec.height is not None:
        mask &= _in_range(cols.numbers("height", lambda r: r.get("height")), spec.height)
    for name, values in spec.meta:
        if name not in cols.meta_names():  # no item has it: nothing matches (and nothing is cached)
            mask[:] = False
            continue
        mask &= _any_of(cols.inverted("meta:" + name, _meta(name)), values, cols.count)
    return mask
