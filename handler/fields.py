"""Checks of single request values, shared by the request models (:mod:`handler.schemas`,
:mod:`handler.schemas_query`): text cleaning, base64 images, query vectors, and the per-request pixel
budget checked on image headers. Errors are :class:`handler.core.errors.BadInputError` subclasses with
their own codes."""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Sequence
from typing import Any

from handler.core.errors import BadInputError, ImageTooLargeError, InvalidTextError
from handler.core.images import probe_image
from handler.core.query import InvalidEmbeddingError
from handler.limits import MAX_TEXT_CHARS
from handler.request_errors import InvalidBase64Error, InvalidRequestError, PixelBudgetError

__all__ = [
    "check_embedding",
    "check_pixel_budget",
    "clean_text",
    "decode_image_field",
    "scrub",
    "type_name",
]

_DATA_URI = re.compile(r"^data:([A-Za-z0-9.+\-]+/[A-Za-z0-9.+\-]+)?((?:;[^,;]*)*?);base64,", re.IGNORECASE)
_SURROGATE = re.compile("[\ud800-\udfff]")


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def scrub(value: str) -> str:
    """Lone surrogates (valid JSON escapes, not encodable as UTF-8) -> U+FFFD, as ftfy would."""
    return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value


def clean_text(value: Any, name: str = "text") -> tuple[str, bool]:
    if not isinstance(value, str):
        raise InvalidRequestError(f"'{name}' must be a string, got {type_name(value)}")
    value = scrub(value)
    if "\x00" in value:
        raise InvalidTextError(f"'{name}' contains a NUL character")
    if not value.strip():
        raise InvalidTextError(f"'{name}' is empty")
    if len(value) > MAX_TEXT_CHARS:
        return value[:MAX_TEXT_CHARS], True
    return value, False


def decode_image_field(value: Any, max_bytes: int, name: str = "image") -> bytes:
    """A base64 string (optionally a ``data:<type>;base64,`` URI, whitespace and URL-safe alphabet
    tolerated, padding optional) -> bytes, at most ``max_bytes``."""
    if not isinstance(value, str):
        raise InvalidRequestError(f"'{name}' must be a base64 string, got {type_name(value)}")
    text = value
    if text[:5].lower() == "data:":
        match = _DATA_URI.match(text)
        if match is None:
            raise InvalidBase64Error(
                f"'{name}' is a data URI but not a base64 one (expected data:<type>;base64,...)"
            )
        text = text[match.end() :]
    if len(text) > (max_bytes + 2) // 3 * 4 * 2 + 1024:  # far over the limit even with whitespace: don't scan
        raise ImageTooLargeError(f"'{name}' is over the limit of {max_bytes} bytes")
    text = "".join(text.split())  # drop whitespace (line-wrapped base64): ~20x faster than a regex
    if not text:
        raise InvalidBase64Error(f"'{name}' is empty")
    if len(text) > (max_bytes + 2) // 3 * 4 + 4:
        raise ImageTooLargeError(f"'{name}' is over the limit of {max_bytes} bytes")
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidBase64Error(f"'{name}' is not valid base64 ({e})") from None
    if not data:
        raise InvalidBase64Error(f"'{name}' decodes to 0 bytes")
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"'{name}' is {len(data)} bytes, over the limit of {max_bytes} bytes")
    return data


def check_pixel_budget(images: Sequence[bytes], budget: int, max_pixels: int | None) -> int:
    """Check a request's images on their headers before any is decoded: each within the per-image limits
    (pixels, aspect ratio), and width x height summed within ``budget`` (else 413 ``too_many_pixels``).
    Returns the sum."""
    total = 0
    for i, data in enumerate(images):
        try:
            w, h = probe_image(data, max_pixels)
        except BadInputError as e:
            if len(images) > 1:
                raise type(e)(f"image[{i}]: {e.message}") from None
            raise
        total += w * h
    if total > budget:
        raise PixelBudgetError(
            f"the request's image(s) have {total} pixels in all (width x height summed), over the limit of "
            f"{budget} per request; send fewer or smaller images"
        )
    return total


def check_embedding(value: Any) -> list[float]:
    """A query vector: a non-empty array of at most 65536 finite numbers (booleans are not numbers)."""
    if not isinstance(value, list):
        raise InvalidRequestError(f"'embedding' must be an array of numbers, got {type_name(value)}")
    if not value:
        raise InvalidEmbeddingError("'embedding' is empty")
    if len(value) > 65536:
        raise InvalidEmbeddingError(
            f"'embedding' has {len(value)} values; far more than any model's dimension"
        )
    for i, x in enumerate(value):
        if not _is_number(x):
            raise InvalidRequestError(f"'embedding'[{i}] must be a number, got {type_name(x)}")
    try:
        floats = [float(x) for x in value]
    except OverflowError:
        raise InvalidEmbeddingError("'embedding' holds an integer too large for a float") from None
    if not all(math.isfinite(x) for x in floats):
        raise InvalidEmbeddingError("'embedding' holds a non-finite value")
    return floats
