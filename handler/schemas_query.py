"""The ``terms`` (compound query) and ``dedupe`` fields of a ``POST /search`` JSON body (issue 17).

:class:`handler.schemas.SearchJSON` holds them (the OpenAPI schema); here they are validated, with messages
that name the term (``'terms'[2]: ...``), and turned into :class:`handler.core.query.Term` objects."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from handler import fields
from handler.core.dedupe import DEFAULT_THRESHOLD
from handler.core.errors import BadInputError
from handler.core.query import MAX_TERMS, MAX_WEIGHT, TERM_KINDS, Term
from handler.fields import type_name
from handler.limits import MAX_REQUEST_TEXT_CHARS, MAX_TEXT_CHARS
from handler.request_errors import InvalidRequestError, TextBudgetError
from handler.validation import validate

__all__ = ["DedupeJSON", "TermJSON", "check_terms", "dedupe_threshold", "query_terms"]


class TermJSON(BaseModel):
    """One term of a compound query: exactly one of ``text``, ``image``, ``id``, ``embedding``; a weight."""

    model_config = ConfigDict(strict=True, extra="forbid")
    text: str | None = Field(None, description="a text")
    image: str | None = Field(None, description="a base64 image, optionally as a data: URI")
    id: Annotated[str, Field(min_length=1, max_length=1024)] | int | None = Field(
        None, description="an indexed item (its stored embedding; the item is not a result)"
    )
    embedding: list[float] | None = Field(None, description="a vector of the index's dimension")
    weight: float = Field(
        1.0,
        ge=-MAX_WEIGHT,
        le=MAX_WEIGHT,
        allow_inf_nan=False,
        description="weight of the term's normalised embedding in the sum (negative: subtract)",
    )


class DedupeJSON(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    threshold: float = Field(
        DEFAULT_THRESHOLD, gt=0, le=1, description="cosine at or above which two results are duplicates"
    )


def check_terms(value: Any) -> list[TermJSON]:
    """The ``terms`` array, each term validated (1 to MAX_TERMS of them, not all weights zero)."""
    if not isinstance(value, list):
        raise InvalidRequestError(f"'terms' must be an array of terms, got {type_name(value)}")
    if not 1 <= len(value) <= MAX_TERMS:
        raise InvalidRequestError(f"'terms' must hold 1 to {MAX_TERMS} terms, got {len(value)}")
    terms = []
    for i, item in enumerate(value):
        where = f"'terms'[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequestError(
                f'{where} must be an object such as {{"text": "a dog", "weight": 1}}, got {type_name(item)}'
            )
        present = [k for k in TERM_KINDS if item.get(k) is not None]
        if len(present) != 1 and not set(item) - set(TermJSON.model_fields):
            what = "none" if not present else " and ".join(f"'{p}'" for p in present)
            raise InvalidRequestError(
                f"{where}: give exactly one of 'text', 'image', 'id' or 'embedding' (got {what})"
            )
        item = {k: fields.scrub(v) if isinstance(v, str) else v for k, v in item.items()}
        try:
            if item.get("embedding") is not None:
                item["embedding"] = fields.check_embedding(item["embedding"])
            terms.append(validate(TermJSON, item))
        except BadInputError as e:
            raise type(e)(f"{where}: {e.message}") from None
    if not any(t.weight for t in terms):
        raise InvalidRequestError("the weights of 'terms' are all zero: give at least one non-zero weight")
    return terms


def query_terms(terms: list[TermJSON], max_image_bytes: int) -> list[Term]:
    """Validated terms -> query terms: texts cleaned (and cut), images decoded within ``max_image_bytes``;
    the texts of one request hold at most MAX_REQUEST_TEXT_CHARS characters together."""
    out = []
    for i, t in enumerate(terms):
        kind = next(k for k in TERM_KINDS if getattr(t, k) is not None)
        value, precut = getattr(t, kind), False
        if kind == "text":
            value, precut = fields.clean_text(value, f"terms[{i}].text")
        elif kind == "image":
            value = fields.decode_image_field(value, max_image_bytes, f"terms[{i}].image")
        out.append(Term(kind, value, t.weight, precut, f"'terms'[{i}]"))
    chars = sum(len(t.value) for t in out if t.kind == "text")
    if chars > MAX_REQUEST_TEXT_CHARS:
        raise TextBudgetError(
            f"the texts of one request may hold at most {MAX_REQUEST_TEXT_CHARS} characters together "
            f"(each is cut at {MAX_TEXT_CHARS}); send them in several requests"
        )
    return out


def dedupe_threshold(value: bool | DedupeJSON | None) -> float | None:
    """``true`` -> the default threshold, an object -> its threshold, ``false`` / absent -> None."""
    if isinstance(value, DedupeJSON):
        return value.threshold
    return DEFAULT_THRESHOLD if value else None
