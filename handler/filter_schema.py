"""The ``filter`` of ``POST /search`` (and of the terminal client): a strict pydantic model, its OpenAPI
schema, and :func:`parse_filter`, the one way from a request value (a JSON object, a JSON string or the
compact text form of :mod:`handler.core.filter_text`) to a :class:`handler.core.filters.FilterSpec`.

Errors are 400 ``invalid_filter`` naming the part: ``filter.taken.from: not a date: '2024-13-01' ...``.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from handler.core.filter_text import parse_compact
from handler.core.filters import FilterSpec, InvalidFilterError, Range, date_bound
from handler.fields import type_name

__all__ = ["MAX_META_FIELDS", "MAX_VALUES", "FilterJSON", "parse_filter"]

MAX_VALUES = 100  # values of one `in`, prefixes, extensions...
MAX_META_FIELDS = 20
MAX_FILTER_TEXT = 4096

_Str = Annotated[str, Field(min_length=1, max_length=1024)]
_Short = Annotated[str, Field(min_length=1, max_length=64)]
_Scalar = bool | int | float | _Str
_Dimension = Annotated[int, Field(ge=0, le=1_000_000_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=False)


class AnyOf(_Strict):
    """``{"in": [values]}``: matches any of them."""

    in_: list[_Scalar] = Field(alias="in", min_length=1, max_length=MAX_VALUES)


_Match = _Scalar | AnyOf


class SizeRange(_Strict):
    """Pixels, both bounds inclusive; at least one."""

    min: _Dimension | None = None
    max: _Dimension | None = None

    @model_validator(mode="after")
    def _ordered(self) -> SizeRange:
        if self.min is None and self.max is None:
            raise ValueError("give 'min' and/or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"'min' {self.min} is greater than 'max' {self.max}")
        return self

    def range(self) -> Range:
        return Range(self.min, self.max)


class DateRange(_Strict):
    """``from`` / ``to``: ``YYYY-MM-DD`` (``to`` includes that whole day) or ISO 8601 date-times; naive
    times are UTC. At least one."""

    from_: Annotated[str, Field(max_length=40)] | None = Field(None, alias="from")
    to: Annotated[str, Field(max_length=40)] | None = None

    @field_validator("from_", "to")
    @classmethod
    def _date(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                date_bound(value, end=False)
            except InvalidFilterError as e:
                raise ValueError(e.message) from None
        return value

    @model_validator(mode="after")
    def _ordered(self) -> DateRange:
        r = self.range()
        if r.lo is None and r.hi is None:
            raise ValueError("give 'from' and/or 'to'")
        if r.lo is not None and r.hi is not None and r.lo > r.hi:
            raise ValueError(f"'from' {self.from_} is after 'to' {self.to}")
        return self

    def range(self) -> Range:
        lo = date_bound(self.from_, end=False) if self.from_ is not None else None
        return Range(lo, date_bound(self.to, end=True) if self.to is not None else None)


def _many(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list) else (value,)


def _values(match: Any) -> tuple[Any, ...]:
    return tuple(match.in_) if isinstance(match, AnyOf) else (match,)


class FilterJSON(_Strict):
    """Every part given must match (AND); a list or ``{"in": [...]}`` matches any of its values (OR). An
    item without the field a part reads does not match it."""

    path_prefix: _Str | Annotated[list[_Str], Field(min_length=1, max_length=MAX_VALUES)] | None = Field(
        None,
        description="the item id (the path in the folder or S3 prefix) starts with this (or any of these)",
    )
    ext: _Short | Annotated[list[_Short], Field(min_length=1, max_length=MAX_VALUES)] | None = Field(
        None, description="file extension(s) without the dot, any case: 'jpg', ['jpg', 'jpeg']"
    )
    type: _Short | Annotated[list[_Short], Field(min_length=1, max_length=MAX_VALUES)] | None = Field(
        None, description="MIME type(s) of the decoded file: 'image/png'"
    )
    taken: DateRange | None = Field(None, description="EXIF DateTimeOriginal, else the file's mtime")
    width: SizeRange | None = None
    height: SizeRange | None = None
    camera: _Match | None = Field(None, description="EXIF Make + Model, e.g. 'Canon Canon EOS 5D'")
    gps: bool | None = Field(None, description="whether the image's EXIF holds GPS information")
    meta: (
        Annotated[
            dict[Annotated[str, Field(min_length=1, max_length=128)], _Match],
            Field(max_length=MAX_META_FIELDS),
        ]
        | None
    ) = Field(None, description="metadata field -> a value or {'in': [values]} (lists in items: any element)")

    def spec(self) -> FilterSpec:
        return FilterSpec(
            path_prefix=_many(self.path_prefix) if self.path_prefix is not None else (),
            ext=tuple(e.lower().lstrip(".") for e in _many(self.ext)) if self.ext is not None else (),
            type=tuple(t.lower() for t in _many(self.type)) if self.type is not None else (),
            taken=self.taken.range() if self.taken else None,
            width=self.width.range() if self.width else None,
            height=self.height.range() if self.height else None,
            camera=_values(self.camera) if self.camera is not None else (),
            gps=self.gps,
            meta=tuple((k, _values(v)) for k, v in (self.meta or {}).items()),
            echo=self.model_dump(by_alias=True, exclude_none=True),
        )


# pydantic's location parts that name a union member or a validator, not a place in the filter
_TAG = re.compile(
    r"^(?:bool|int|float|str|AnyOf|constrained-.*|list\[.*|function-.*|json-or-python.*|\[key\])$"
)
_VALUE = "a string, a number, a boolean or {'in': [values]}"
_EXPECTED = {"path_prefix": "a string or a list of strings", "ext": "a string or a list of strings"}
_EXPECTED |= {"type": _EXPECTED["ext"], "camera": _VALUE}


def _place(loc: tuple[Any, ...]) -> list[str]:
    return [str(p) for p in loc if not _TAG.match(str(p))]


def _describe(error: ValidationError) -> str:
    """The most specific problem, located as ``filter.<part>[.<name>]``."""
    errors = error.errors(include_url=False)
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        place = _place(unknown[0]["loc"])
        return f"{'.'.join(['filter', *place])}: unknown field; {_allowed(unknown[0]['loc'], place)}"
    best = max(errors, key=lambda e: (len(_place(e["loc"])), not e["type"].endswith("_type")))
    place = _place(best["loc"])
    where = ".".join(["filter", *place])
    expected = _EXPECTED.get(place[0]) if len(place) == 1 else _VALUE if place[:1] == ["meta"] else None
    if expected and best["type"].endswith("_type") and len(place) <= 2:
        return f"{where}: expected {expected}, got {type_name(best['input'])}"
    return f"{where}: {best['msg'].removeprefix('Value error, ')}"


def _allowed(loc: tuple[Any, ...], place: list[str]) -> str:
    if "AnyOf" in loc:
        return "allowed: in (or give the value itself)"
    models: dict[str, type[BaseModel]] = {"taken": DateRange, "width": SizeRange, "height": SizeRange}
    model = FilterJSON if len(place) == 1 else models.get(place[0]) if len(place) == 2 else None
    if model is None:
        return f"expected {_VALUE}"
    return "allowed: " + ", ".join(f.alias or name for name, f in model.model_fields.items())


def validated(value: Any) -> FilterJSON:
    """A filter as a request gives it -> the validated model (:class:`InvalidFilterError` otherwise)."""
    if isinstance(value, FilterJSON):
        return value
    if isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_FILTER_TEXT:
            raise InvalidFilterError(f"'filter' is over {MAX_FILTER_TEXT} characters")
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError as e:
                raise InvalidFilterError(f"'filter' is not valid JSON ({e})") from None
        else:
            value = parse_compact(text)
    if not isinstance(value, dict):
        raise InvalidFilterError(
            f"'filter' must be an object (or its text form, e.g. 'ext:jpg taken:2024-01-01..'), "
            f"got {type(value).__name__}"
        )
    try:
        return FilterJSON.model_validate(value)
    except ValidationError as e:
        raise InvalidFilterError(_describe(e)) from None


def parse_filter(value: Any) -> FilterSpec:
    """A JSON object, a JSON string or the compact text -> the spec (:class:`InvalidFilterError`)."""
    return validated(value).spec()
