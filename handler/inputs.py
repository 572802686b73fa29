"""Request bodies -> validated queries: JSON and multipart parsing, base64 images, limits.

Validation is explicit (no type coercion: ``"k": "5"`` or ``"k": true`` are rejected) so that every bad
input maps to a 4xx with a precise message. Raised errors are :class:`handler.errors.BadInputError`
subclasses; the app renders them as ``{"error": {"code", "message"}}`` with their ``status``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from handler.errors import BadInputError, ImageTooLargeError, InvalidTextError

__all__ = [
    "EF_MAX",
    "K_DEFAULT",
    "K_MAX",
    "MAX_EMBED_IMAGES",
    "MAX_EMBED_TEXTS",
    "MAX_TEXT_CHARS",
    "OFFSET_MAX",
    "EmbeddingsRequest",
    "InvalidRequestError",
    "PayloadTooLargeError",
    "SearchRequest",
    "UnknownItemError",
    "UnsupportedMediaTypeError",
    "body_limit",
    "decode_image_field",
    "embeddings_from_json",
    "form_number",
    "media_type",
    "parse_json",
    "search_from_form",
    "search_from_json",
    "search_params",
]

K_DEFAULT = 10
K_MAX = 100
OFFSET_MAX = 1000
EF_MAX = 4096
#: Longer texts are cut to this many characters before tokenization (CLIP keeps only the first
#: context_length - 2 tokens anyway); such a query is reported as truncated.
MAX_TEXT_CHARS = 20_000
MAX_EMBED_TEXTS = 64
MAX_EMBED_IMAGES = 16
QUERY_FIELDS = ("text", "image", "embedding", "id")
SEARCH_FIELDS = (*QUERY_FIELDS, "k", "offset", "min_score", "ef", "language")
_DATA_URI = re.compile(r"^data:([A-Za-z0-9.+\-]+/[A-Za-z0-9.+\-]+)?((?:;[^,;]*)*?);base64,", re.IGNORECASE)
_B64_JUNK = re.compile(r"[\s]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


class InvalidRequestError(BadInputError):
    code = "invalid_request"


class InvalidJSONError(BadInputError):
    code = "invalid_json"


class InvalidBase64Error(BadInputError):
    code = "invalid_base64"


class InvalidEmbeddingError(BadInputError):
    code = "invalid_embedding"


class UnsupportedMediaTypeError(BadInputError):
    code = "unsupported_media_type"
    status = 415


class PayloadTooLargeError(BadInputError):
    code = "payload_too_large"
    status = 413


class UnknownItemError(BadInputError):
    code = "unknown_id"
    status = 404


@dataclass
class SearchRequest:
    """One validated /search request. ``type`` is text, image, embedding or id."""

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

    def log_fields(self) -> dict[str, Any]:
        """What the request log may say about the query: its type, sizes and parameters, never content."""
        out: dict[str, Any] = {"query_type": self.type, "k": self.k, "offset": self.offset}
        if self.text is not None:
            out["text_length"] = len(self.text)
        if self.image is not None:
            out["image_bytes"] = len(self.image)
        if self.embedding is not None:
            out["embedding_dim"] = len(self.embedding)
        return out


@dataclass
class EmbeddingsRequest:
    texts: list[str] | None = None
    images: list[bytes] | None = None
    precut: list[bool] = field(default_factory=list)
    language: str | None = None

    def log_fields(self) -> dict[str, Any]:
        return {"query_type": "+".join(t for t, v in (("text", self.texts), ("image", self.images)) if v),
                "texts": len(self.texts or ()), "images": len(self.images or ()),
                "image_bytes": sum(len(i) for i in self.images or ())}


# -- generic helpers --------------------------------------------------------------------------------------------


def body_limit(max_image_bytes: int) -> int:
    """Largest request body accepted: one base64 image at the byte limit plus 1 MiB of everything else."""
    return math.ceil(max_image_bytes / 3) * 4 + (1 << 20)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _reject_constant(name: str) -> Any:
    raise InvalidJSONError(f"invalid JSON: {name} is not a number JSON allows")


def parse_json(body: bytes) -> Any:
    """Strict JSON (no NaN / Infinity)."""
    if not body.strip():
        raise InvalidJSONError("empty request body: expected a JSON object")
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


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_field(obj: Mapping[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = obj.get(name)
    if value is None:
        return default
    if not _is_int(value):
        raise InvalidRequestError(f"'{name}' must be an integer between {low} and {high}, got {_type_name(value)}")
    if not low <= value <= high:
        raise InvalidRequestError(f"'{name}' must be between {low} and {high}, got {value}")
    return int(value)


def _score_field(obj: Mapping[str, Any]) -> float | None:
    value = obj.get("min_score")
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(float(value)):
        raise InvalidRequestError(f"'min_score' must be a finite number, got {_type_name(value)}")
    if not -1.0 <= float(value) <= 1.0:
        raise InvalidRequestError(f"'min_score' must be between -1 and 1 (cosine similarity), got {value}")
    return float(value)


def _scrub(value: str) -> str:
    """Lone surrogates (valid JSON escapes, not encodable as UTF-8) -> U+FFFD, as ftfy would."""
    return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value


def _text(value: Any, name: str = "text") -> tuple[str, bool]:
    if not isinstance(value, str):
        raise InvalidRequestError(f"'{name}' must be a string, got {_type_name(value)}")
    value = _scrub(value)
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
        raise InvalidRequestError(f"'{name}' must be a base64 string, got {_type_name(value)}")
    text = value
    if text[:5].lower() == "data:":
        match = _DATA_URI.match(text)
        if match is None:
            raise InvalidBase64Error(f"'{name}' is a data URI but not a base64 one (expected data:<type>;base64,...)")
        text = text[match.end():]
    if len(text) > (max_bytes + 2) // 3 * 4 * 2 + 1024:  # far over the limit even with whitespace: don't scan
        raise ImageTooLargeError(f"'{name}' is over the limit of {max_bytes} bytes")
    text = _B64_JUNK.sub("", text)
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


def _item_id(value: Any) -> str | int:
    if isinstance(value, str):
        if not value or len(value) > 1024:
            raise InvalidRequestError("'id' must be a non-empty string of at most 1024 characters")
        return _scrub(value)
    if _is_int(value):
        return int(value)
    raise InvalidRequestError(f"'id' must be a string or an integer, got {_type_name(value)}")


def _embedding(value: Any) -> list[float]:
    if not isinstance(value, list):
        raise InvalidRequestError(f"'embedding' must be an array of numbers, got {_type_name(value)}")
    if not value:
        raise InvalidEmbeddingError("'embedding' is empty")
    if len(value) > 65536:
        raise InvalidEmbeddingError(f"'embedding' has {len(value)} values; far more than any model's dimension")
    for i, x in enumerate(value):
        if not _is_number(x):
            raise InvalidRequestError(f"'embedding'[{i}] must be a number, got {_type_name(x)}")
    try:
        floats = [float(x) for x in value]
    except OverflowError:
        raise InvalidEmbeddingError("'embedding' holds an integer too large for a float") from None
    if not all(math.isfinite(x) for x in floats):
        raise InvalidEmbeddingError("'embedding' holds a non-finite value")
    return floats


def _one_query(present: list[str]) -> str:
    if len(present) != 1:
        what = "none" if not present else " and ".join(f"'{p}'" for p in present)
        raise InvalidRequestError(
            f"give exactly one of 'text', 'image', 'embedding' or 'id' (got {what})")
    return present[0]


# -- /search ----------------------------------------------------------------------------------------------------


def search_params(obj: Mapping[str, Any], req: SearchRequest) -> SearchRequest:
    req.k = _int_field(obj, "k", K_DEFAULT, 1, K_MAX) or K_DEFAULT
    req.offset = _int_field(obj, "offset", 0, 0, OFFSET_MAX) or 0
    req.min_score = _score_field(obj)
    req.ef = _int_field(obj, "ef", None, 1, EF_MAX)
    req.language = _language(obj.get("language"))
    return req


def _language(value: Any) -> str | None:
    """A language code (checked against the model's tokenizer when the text is tokenized)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 32:
        raise InvalidRequestError("'language' must be a short string such as 'fra_Latn'")
    return value


def search_from_json(obj: Any, max_image_bytes: int) -> SearchRequest:
    if not isinstance(obj, dict):
        raise InvalidRequestError(f"the request body must be a JSON object, got {_type_name(obj)}")
    unknown = sorted(k for k in obj if k not in SEARCH_FIELDS)
    if unknown:
        raise InvalidRequestError(
            f"unknown field(s) {', '.join(repr(k)[:80] for k in unknown[:5])}; allowed: {', '.join(SEARCH_FIELDS)}")
    kind = _one_query([f for f in QUERY_FIELDS if obj.get(f) is not None])
    req = SearchRequest(type=kind)
    search_params(obj, req)  # cheap checks before decoding an image
    value = obj[kind]
    if kind == "text":
        req.text, req.text_precut = _text(value)
    elif kind == "image":
        req.image = decode_image_field(value, max_image_bytes)
    elif kind == "embedding":
        req.embedding = _embedding(value)
    else:
        req.item_id = _item_id(value)
    return req


def form_number(raw: Any, name: str, kind: type) -> Any:
    if not isinstance(raw, str):
        raise InvalidRequestError(f"'{name}' must be a plain form field, not a file")
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidRequestError(f"'{name}' must be {'an integer' if kind is int else 'a number'}, "
                                  f"got {raw[:40]!r}") from None
    if kind is float and not math.isfinite(value):
        raise InvalidRequestError(f"'{name}' must be a finite number, got {raw[:40]!r}")
    return value


async def search_from_form(form: Any, max_image_bytes: int) -> SearchRequest:
    """``multipart/form-data`` or ``application/x-www-form-urlencoded``: an ``image`` file (or base64
    string) or a ``text`` / ``id`` field, plus the numeric parameters as fields."""
    allowed = ("text", "image", "id", "k", "offset", "min_score", "ef", "language")
    keys = list(form.keys())
    unknown = sorted({k for k in keys if k not in allowed})
    if unknown:
        raise InvalidRequestError(
            f"unknown form field(s) {', '.join(repr(k)[:80] for k in unknown[:5])}; allowed: {', '.join(allowed)}")
    for name in set(keys):
        if len(form.getlist(name)) > 1:
            raise InvalidRequestError(f"form field '{name}' given more than once")
    values: dict[str, Any] = {}
    for name, kind in (("k", int), ("offset", int), ("ef", int), ("min_score", float)):
        if name in form:
            values[name] = form_number(form[name], name, kind)
    if "language" in form:
        values["language"] = form["language"] if isinstance(form["language"], str) else 0
    present = []
    for name in ("text", "image", "id"):
        value = form.get(name)
        if value is None or (isinstance(value, str) and value == ""):
            continue
        if not isinstance(value, str) and getattr(value, "filename", None) == "" and not getattr(value, "size", 1):
            continue  # an empty file input submitted by a browser form
        present.append(name)
    kind = _one_query(present)
    req = search_params(values, SearchRequest(type=kind))
    value = form[kind]
    if kind == "image":
        if isinstance(value, str):
            req.image = decode_image_field(value, max_image_bytes)
        else:
            data = await value.read(max_image_bytes + 1)
            if len(data) > max_image_bytes:
                raise ImageTooLargeError(f"'image' is over the limit of {max_image_bytes} bytes")
            if not data:
                raise BadInputError("'image' file is empty")
            req.image = data
    elif not isinstance(value, str):
        raise InvalidRequestError(f"'{kind}' must be a plain form field, not a file")
    elif kind == "text":
        req.text, req.text_precut = _text(value)
    else:
        req.item_id = _item_id(value.strip())
    return req


# -- /embeddings ------------------------------------------------------------------------------------------------


def _as_list(value: Any, name: str, limit: int) -> tuple[list[Any], bool]:
    if isinstance(value, list):
        if not value:
            raise InvalidRequestError(f"'{name}' is an empty list")
        if len(value) > limit:
            raise InvalidRequestError(f"'{name}' holds {len(value)} values; at most {limit} per request")
        return value, True
    return [value], False


def embeddings_from_json(obj: Any, max_image_bytes: int) -> EmbeddingsRequest:
    if not isinstance(obj, dict):
        raise InvalidRequestError(f"the request body must be a JSON object, got {_type_name(obj)}")
    unknown = sorted(k for k in obj if k not in ("text", "image", "language"))
    if unknown:
        raise InvalidRequestError(
            f"unknown field(s) {', '.join(repr(k)[:80] for k in unknown[:5])}; allowed: 'text', 'image', 'language'")
    if obj.get("text") is None and obj.get("image") is None:
        raise InvalidRequestError("give 'text' and/or 'image' (each a single value or a list)")
    req = EmbeddingsRequest(language=_language(obj.get("language")))
    if obj.get("text") is not None:
        texts, _ = _as_list(obj["text"], "text", MAX_EMBED_TEXTS)
        req.texts = []
        for i, t in enumerate(texts):
            text, cut = _text(t, f"text[{i}]" if isinstance(obj["text"], list) else "text")
            req.texts.append(text)
            req.precut.append(cut)
    if obj.get("image") is not None:
        images, many = _as_list(obj["image"], "image", MAX_EMBED_IMAGES)
        req.images = [decode_image_field(v, max_image_bytes, f"image[{i}]" if many else "image")
                      for i, v in enumerate(images)]
    return req
