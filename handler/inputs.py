"""The pieces request validation is built from: limits, error classes, strict JSON parsing, base64 images,
text cleaning, form fields, the per-request pixel budget, and the validated request objects.

The models of :mod:`handler.schemas` validate (and document) each body with these; raised errors are
:class:`handler.core.errors.BadInputError` subclasses, rendered as ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from handler.core.errors import BadInputError, ImageTooLargeError, InvalidTextError
from handler.core.filters import FilterSpec
from handler.core.preprocess import probe_image
from handler.core.query import InvalidEmbeddingError, Term, UnknownItemError

__all__ = [
    "EF_MAX",
    "K_DEFAULT",
    "K_MAX",
    "MAX_EMBED_IMAGES",
    "MAX_EMBED_TEXTS",
    "MAX_REQUEST_TEXT_CHARS",
    "MAX_TEXT_CHARS",
    "OFFSET_MAX",
    "EmbeddingsRequest",
    "InvalidRequestError",
    "PayloadTooLargeError",
    "PixelBudgetError",
    "SearchRequest",
    "TextBudgetError",
    "UnknownItemError",
    "UnsupportedMediaTypeError",
    "body_limit",
    "check_embedding",
    "check_pixel_budget",
    "clean_text",
    "decode_image_field",
    "form_number",
    "media_type",
    "numbers",
    "parse_json",
    "read_form",
]

K_DEFAULT = 10
K_MAX = 100
OFFSET_MAX = 1000
EF_MAX = 4096
#: Longer texts are cut to this many characters before tokenization (CLIP keeps only the first
#: context_length - 2 tokens anyway); such a query is reported as truncated.
MAX_TEXT_CHARS = 20_000
MAX_EMBED_TEXTS = 64
#: Characters summed over one request's texts (after each is cut to MAX_TEXT_CHARS): bounds tokenizer work per
#: request (a 20k-character single word costs ~60-250 ms of BPE; 64 of them would be seconds).
MAX_REQUEST_TEXT_CHARS = 100_000
MAX_EMBED_IMAGES = 16
QUERY_FIELDS = ("text", "image", "embedding", "id", "terms")
_DATA_URI = re.compile(r"^data:([A-Za-z0-9.+\-]+/[A-Za-z0-9.+\-]+)?((?:;[^,;]*)*?);base64,", re.IGNORECASE)
_SURROGATE = re.compile("[\ud800-\udfff]")


class InvalidRequestError(BadInputError):
    code = "invalid_request"


class InvalidJSONError(BadInputError):
    code = "invalid_json"


class InvalidBase64Error(BadInputError):
    code = "invalid_base64"


class UnsupportedMediaTypeError(BadInputError):
    code = "unsupported_media_type"
    status = 415


class PayloadTooLargeError(BadInputError):
    code = "payload_too_large"
    status = 413


class PixelBudgetError(PayloadTooLargeError):
    code = "too_many_pixels"


class TextBudgetError(PayloadTooLargeError):
    code = "too_much_text"


@dataclass
class SearchRequest:
    """One validated /search request. ``type`` is text, image, embedding, id or terms."""

    type: str
    text: str | None = None
    text_precut: bool = False
    image: bytes | None = None
    embedding: list[float] | None = None
    item_id: str | int | None = None
    k: int = K_DEFAULT
    offset: int = 0
    min_score: float | None = None
    ef: int | None = None
    language: str | None = None  # source-language code for tokenizers that take one (NLLB)
    # -- compound queries and near-duplicate collapse (issue 17)
    terms: list[Term] | None = None
    dedupe: float | None = None  # cosine threshold

    def query_terms(self) -> list[Term]:
        """The query as terms (a single-term form is one term of weight 1)."""
        if self.terms is not None:
            return self.terms
        value = {"text": self.text, "image": self.image, "embedding": self.embedding, "id": self.item_id}
        return [Term(self.type, value[self.type], precut=self.text_precut)]

    filter: FilterSpec | None = None  # only items matching it (handler.core.filters)

    def log_fields(self) -> dict[str, Any]:
        """What the request log may say about the query: its type, sizes and parameters, never content."""
        out: dict[str, Any] = {"query_type": self.type, "k": self.k, "offset": self.offset}
        if self.text is not None:
            out["text_length"] = len(self.text)
        if self.image is not None:
            out["image_bytes"] = len(self.image)
        if self.embedding is not None:
            out["embedding_dim"] = len(self.embedding)
        if self.terms is not None:
            out["terms"] = len(self.terms)
            out["term_types"] = "+".join(sorted({t.kind for t in self.terms}))
        if self.dedupe is not None:
            out["dedupe"] = self.dedupe
        if self.filter is not None:
            out["filter"] = self.filter.fields()
        return out


@dataclass
class EmbeddingsRequest:
    texts: list[str] | None = None
    images: list[bytes] | None = None
    precut: list[bool] = field(default_factory=list)
    language: str | None = None

    def log_fields(self) -> dict[str, Any]:
        return {
            "query_type": "+".join(t for t, v in (("text", self.texts), ("image", self.images)) if v),
            "texts": len(self.texts or ()),
            "images": len(self.images or ()),
            "image_bytes": sum(len(i) for i in self.images or ()),
        }


# -- generic helpers ----------------------------------------------------------------------------------------


def body_limit(max_image_bytes: int) -> int:
    """Largest request body accepted: one base64 image at the byte limit plus 1 MiB of everything else."""
    return math.ceil(max_image_bytes / 3) * 4 + (1 << 20)


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
