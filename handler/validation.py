"""Validation of a request body by a pydantic model, with the service's error: a pydantic error becomes
400 ``invalid_request`` with a message naming the field; the models' own errors keep their codes."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from handler.fields import type_name
from handler.request_errors import InvalidRequestError

__all__ = ["validate"]

_M = TypeVar("_M", bound=BaseModel)


def validate(model: type[_M], data: Any) -> _M:
    """``model.model_validate(data)``; a pydantic error becomes :class:`InvalidRequestError` naming the field
    (the validators' own errors, with their codes, pass through)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InvalidRequestError(_describe(e, model)) from None


def _describe(error: ValidationError, model: type[BaseModel]) -> str:
    errors = error.errors(include_url=False)
    first = errors[0]
    loc = first["loc"]
    name = str(loc[0]) if loc else "body"
    if first["type"] == "extra_forbidden":
        unknown = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden"]
        return (
            f"unknown field(s) {', '.join(repr(k)[:80] for k in unknown[:5])}; "
            f"allowed: {', '.join(model.model_fields)}"
        )
    same = [e for e in errors if e["loc"][:1] == loc[:1]]
    specific = [e for e in same if not e["type"].endswith("_type")]
    if len(same) > 1 and not specific:  # a union: every alternative has another type
        wanted = dict.fromkeys(e["msg"].removeprefix("Input should be ") for e in same)
        return f"'{name}' should be {' or '.join(wanted)}, got {type_name(first['input'])}"
    first = (specific or same)[0]
    where = f"'{name}'" + "".join(f"[{p}]" for p in first["loc"][1:] if isinstance(p, int))
    value = first["input"]
    got = (
        repr(value)[:40]
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else type_name(value)
    )
    return f"{where}: {first['msg']}, got {got}"
