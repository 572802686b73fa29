"""Pydantic models of the HTTP API's request bodies: the one validation of a request and its OpenAPI schema.

Requests are strict (no coercion: ``"k": "5"`` or ``"k": true`` are refused; unknown fields too). Checks
with their own error code (``invalid_text``, ``invalid_base64``, ``invalid_embedding``, ``image_too_large``)
raise :mod:`handler.fields` errors from the validators; any other problem is a pydantic error that
:func:`handler.validation.validate` turns into ``invalid_request`` with a message naming the field. Base64
images are decoded after every cheap check has passed (``query()`` / ``request()`` of a validated model).
Responses: :mod:`handler.response_models`. Keep both in step with docs/api.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from handler import fields, filter_schema, schemas_query
from handler.core.dedupe import DEFAULT_THRESHOLD
from handler.core.query import MAX_TERMS
from handler.fields import type_name
from handler.filter_schema import FilterJSON
from handler.limits import (
    EF_MAX,
    K_DEFAULT,
    K_MAX,
    MAX_EMBED_IMAGES,
    MAX_EMBED_TEXTS,
    MAX_REQUEST_TEXT_CHARS,
    MAX_TEXT_CHARS,
    OFFSET_MAX,
)
from handler.request import QUERY_FIELDS, EmbeddingsRequest, SearchRequest
from handler.request_errors import InvalidRequestError, TextBudgetError

__all__ = ["EmbeddingsJSON", "SearchForm", "SearchJSON"]


def _scrubbed(data: dict[str, Any]) -> dict[str, Any]:
    """Lone surrogates (valid JSON escapes, not UTF-8) -> U+FFFD in string values and lists of strings:
    pydantic refuses them as strings, the old validator (and ftfy) replace them."""

    def fix(value: Any) -> Any:
        if isinstance(value, str):
            return fields.scrub(value)
        if isinstance(value, list) and value and isinstance(value[0], str):
            return [fields.scrub(v) if isinstance(v, str) else v for v in value]
        return value

    return {k: fix(v) for k, v in data.items()}


_Id = Annotated[str, Field(min_length=1, max_length=1024)] | int
_LANGUAGE_DOC = "source-language code of a text query (NLLB bundles, e.g. 'fra_Latn'); other models refuse it"
_FILTER_DOC = (
    "only items matching this (docs/api.md, Filters): an object, or its text form such as "
    "'ext:jpg taken:2024-01-01..2024-12-31'"
)


def _language(value: Any) -> Any:
    """A language code is checked against the model's tokenizer when the text is tokenized; here only its
    shape (an empty one is none)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 32:
        raise InvalidRequestError("'language' must be a short string such as 'fra_Latn'")
    return value


class _Search(BaseModel):
    """The parameters every /search body takes, and the checks of its query (exactly one kind)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    k: int = Field(K_DEFAULT, ge=1, le=K_MAX, description="how many results")
    offset: int = Field(0, ge=0, le=OFFSET_MAX, description="skip this many results (paging)")
    min_score: float | None = Field(None, ge=-1, le=1, description="drop results scoring below this (cosine)")
    ef: int | None = Field(None, ge=1, le=EF_MAX, description="HNSW search breadth (default: the index's)")
    language: str | None = Field(None, description=_LANGUAGE_DOC)
    filter: FilterJSON | None = Field(None, description=_FILTER_DOC)

    _check_language = field_validator("language", mode="before")(_language)

    @field_validator("filter", mode="before")
    @classmethod
    def _filter(cls, value: Any) -> Any:
        return None if value is None or value == "" else filter_schema.validated(value)

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise InvalidRequestError(f"the request body must be a JSON object, got {type_name(data)}")
        present = [f for f in QUERY_FIELDS if data.get(f) is not None]
        if len(present) != 1 and not set(data) - set(cls.model_fields):  # unknown fields: pydantic's message
            what = "none" if not present else " and ".join(f"'{p}'" for p in present)
            raise InvalidRequestError(
                f"give exactly one of 'text', 'image', 'embedding', 'id' or 'terms' (got {what})"
            )
        return _scrubbed(data)

    def query(self, max_image_bytes: int) -> SearchRequest:
        """The validated request; the image decoded (base64) or checked (bytes) against
        ``max_image_bytes``."""
        given = self.model_dump(exclude_none=True)
        kind = next(f for f in QUERY_FIELDS if f in given)
        req = SearchRequest(
            type=kind,
            k=self.k,
            offset=self.offset,
            min_score=self.min_score,
            ef=self.ef,
            language=self.language,
        )
        if self.filter is not None:
            req.filter = self.filter.spec()
        value = getattr(self, kind)
        if kind == "text":
            req.text, req.text_precut = fields.clean_text(value)
        elif kind == "image":
            req.image = (
                value if isinstance(value, bytes) else fields.decode_image_field(value, max_image_bytes)
            )
        elif kind == "embedding":
            req.embedding = value
        elif kind == "terms":
            req.terms = schemas_query.query_terms(value, max_image_bytes)
        else:
            req.item_id = value
        return req


class SearchJSON(_Search):
    """Exactly one of ``text``, ``image``, ``embedding``, ``id``, ``terms``."""

    text: str | None = Field(None, description="free-text query (truncated to the model's context like CLIP)")
    image: str | None = Field(None, description="base64 image, optionally as a data: URI")
    embedding: list[float] | None = Field(None, description="a query vector of the index's dimension")
    id: _Id | None = Field(None, description="an item id: 'more like this' (the item itself is excluded)")

    @field_validator("embedding", mode="before")
    @classmethod
    def _embedding(cls, value: Any) -> Any:
        return None if value is None else fields.check_embedding(value)

    # -- compound queries and near-duplicate collapse (issue 17): handler/schemas_query.py
    terms: list[schemas_query.TermJSON] | None = Field(
        None,
        description=f"a compound query: 1 to {MAX_TERMS} terms, each exactly one of text, image, id, "
        "embedding, and a weight (default 1, negative subtracts); "
        "query = normalise(sum of weight x normalised embedding)",
    )
    dedupe: bool | schemas_query.DedupeJSON | None = Field(
        None,
        description=f"collapse near-duplicate results: true (cosine >= {DEFAULT_THRESHOLD}) or "
        "{\"threshold\": 0.95}; each result lists the ids it absorbed in 'duplicates'",
    )

    @field_validator("terms", mode="before")
    @classmethod
    def _terms(cls, value: Any) -> Any:
        return None if value is None else schemas_query.check_terms(value)

    def query(self, max_image_bytes: int) -> SearchRequest:
        req = super().query(max_image_bytes)
        req.dedupe = schemas_query.dedupe_threshold(self.dedupe)
        return req


class SearchForm(_Search):
    """multipart/form-data: an ``image`` file (or base64 text), or a ``text`` / ``id`` field; parameters as
    fields (also the query parameters of a raw ``image/*`` body)."""

    image: bytes | str | None = Field(None, json_schema_extra={"format": "binary"})
    text: str | None = None
    id: Annotated[str, Field(min_length=1, max_length=1024)] | None = None


class EmbeddingsJSON(BaseModel):
    """``text`` and/or ``image``: each a single value or a list."""

    model_config = ConfigDict(strict=True, extra="forbid")
    text: str | Annotated[list[str], Field(min_length=1, max_length=MAX_EMBED_TEXTS)] | None = Field(
        None, description=f"one text or a list (at most {MAX_EMBED_TEXTS})"
    )
    image: str | Annotated[list[str], Field(min_length=1, max_length=MAX_EMBED_IMAGES)] | None = Field(
        None, description=f"one base64 image or a list (at most {MAX_EMBED_IMAGES})"
    )
    language: str | None = Field(None, description=_LANGUAGE_DOC)

    _check_language = field_validator("language", mode="before")(_language)

    @model_validator(mode="before")
    @classmethod
    def _some(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise InvalidRequestError(f"the request body must be a JSON object, got {type_name(data)}")
        if data.get("text") is None and data.get("image") is None and not set(data) - set(cls.model_fields):
            raise InvalidRequestError("give 'text' and/or 'image' (each a single value or a list)")
        return _scrubbed(data)

    def request(self, max_image_bytes: int) -> EmbeddingsRequest:
        req = EmbeddingsRequest(language=self.language)
        if self.text is not None:
            many = isinstance(self.text, list)
            req.texts = []
            for i, t in enumerate(self.text if many else [self.text]):
                text, cut = fields.clean_text(t, f"text[{i}]" if many else "text")
                req.texts.append(text)
                req.precut.append(cut)
            if sum(map(len, req.texts)) > MAX_REQUEST_TEXT_CHARS:
                raise TextBudgetError(
                    f"the texts of one request may hold at most {MAX_REQUEST_TEXT_CHARS} characters together "
                    f"(each is cut at {MAX_TEXT_CHARS}); send them in several requests"
                )
        if self.image is not None:
            many = isinstance(self.image, list)
            req.images = [
                fields.decode_image_field(v, max_image_bytes, f"image[{i}]" if many else "image")
                for i, v in enumerate(self.image if many else [self.image])
            ]
        return req
