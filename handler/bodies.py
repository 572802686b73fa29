"""Reading a request body: its media type, strict JSON, and the fields of a form (or the query parameters
of a raw image body). The models of :mod:`handler.schemas` validate what comes out."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from typing import Any

from handler.core.errors import BadInputError, ImageTooLargeError
from handler.request_errors import InvalidJSONError, InvalidRequestError

__all__ = [
    "MAX_JSON_VALUES",
    "NUMBER_FIELDS",
    "form_number",
    "media_type",
    "numbers",
    "parse_json",
    "read_form",
]


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


#: Most values (array elements + object members) a JSON body may hold: the largest valid request is an
#: embedding of at most 65536 numbers. The count is bounded before parsing because json.loads holds the
#: GIL: a 6.8 MB array of 3.4 million zeros took 2.5 s of it, freezing the event loop in any thread.
MAX_JSON_VALUES = 100_000
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def _reject_constant(name: str) -> Any:
    raise InvalidJSONError(f"invalid JSON: {name} is not a number JSON allows")


def _too_many_values(body: bytes) -> bool:
    """More than MAX_JSON_VALUES separators outside strings (a cheap count first; strings are removed
    only when the count is high, e.g. texts full of commas)."""
    if body.count(b",") <= MAX_JSON_VALUES:
        return False
    return _JSON_STRING.sub(b'""', body).count(b",") > MAX_JSON_VALUES


def parse_json(body: bytes) -> Any:
    """Strict JSON: no NaN / Infinity, at most MAX_JSON_VALUES values, integers within Python's digit
    limit. CPU-bound on big bodies: the app calls it from a worker thread."""
    if not body.strip():
        raise InvalidJSONError("empty request body: expected a JSON object")
    if _too_many_values(body):
        raise InvalidJSONError(f"invalid request: the JSON body holds more than {MAX_JSON_VALUES} values")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except InvalidJSONError:
        raise
    except UnicodeDecodeError as e:
        raise InvalidJSONError(f"invalid JSON: body is not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InvalidJSONError(f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise InvalidJSONError("invalid JSON: nested too deeply") from None
    except ValueError:  # int() of an over-long literal (any other decoder limit): bad input, never a 500
        raise InvalidJSONError(
            f"invalid JSON: a number too long to convert (integers have at most "
            f"{sys.get_int_max_str_digits()} digits)"
        ) from None


def form_number(raw: Any, name: str, kind: type) -> Any:
    """A numeric form field or query parameter -> int / float (None when blank)."""
    if not isinstance(raw, str):
        raise InvalidRequestError(f"'{name}' must be a plain form field, not a file")
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidRequestError(
            f"'{name}' must be {'an integer' if kind is int else 'a number'}, got {raw[:40]!r}"
        ) from None
    if kind is float and not math.isfinite(value):
        raise InvalidRequestError(f"'{name}' must be a finite number, got {raw[:40]!r}")
    return value


NUMBER_FIELDS = {"k": int, "offset": int, "ef": int, "min_score": float}


def numbers(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The numeric parameters among form fields / query parameters, converted (blank ones dropped)."""
    out = {n: form_number(fields[n], n, kind) for n, kind in NUMBER_FIELDS.items() if n in fields}
    return {n: v for n, v in out.items() if v is not None}


async def read_form(form: Any, max_image_bytes: int) -> dict[str, Any]:
    """``multipart/form-data`` / ``application/x-www-form-urlencoded`` -> the fields of a search: numbers
    converted, an uploaded ``image`` file read (bytes), empty fields (and a browser's empty file input)
    dropped. Unknown or repeated fields are refused here: a form's keys are not JSON's."""
    allowed = ("text", "image", "id", "language", "filter", *NUMBER_FIELDS)
    keys = list(form.keys())
    unknown = sorted({k for k in keys if k not in allowed})
    if unknown:
        raise InvalidRequestError(
            f"unknown form field(s) {', '.join(repr(k)[:80] for k in unknown[:5])}; allowed: "
            f"{', '.join(allowed)}"
        )
    for name in set(keys):
        if len(form.getlist(name)) > 1:
            raise InvalidRequestError(f"form field '{name}' given more than once")
    out: dict[str, Any] = numbers(form)
    for name in ("text", "image", "id", "language", "filter"):
        value = form.get(name)
        if value is None or (isinstance(value, str) and value == ""):
            continue
        if isinstance(value, str):
            out[name] = value.strip() if name == "id" else value
            continue
        if getattr(value, "filename", None) == "" and not getattr(value, "size", 1):
            continue  # an empty file input submitted by a browser form
        if name != "image":
            raise InvalidRequestError(f"'{name}' must be a plain form field, not a file")
        data = await value.read(max_image_bytes + 1)
        if len(data) > max_image_bytes:
            raise ImageTooLargeError(f"'image' is over the limit of {max_image_bytes} bytes")
        if not data:
            raise BadInputError("'image' file is empty")
        out[name] = data
    return out
