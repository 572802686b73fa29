"""Pydantic models of the HTTP API, used for the OpenAPI document (``/docs``) only.

Bodies are validated by :mod:`handler.inputs` (strict, no coercion); responses are built as plain dicts.
Keep both in step with docs/api.md.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from handler.inputs import EF_MAX, K_DEFAULT, K_MAX, MAX_EMBED_IMAGES, MAX_EMBED_TEXTS, OFFSET_MAX


class SearchJSON(BaseModel):
    """Exactly one of ``text``, ``image``, ``embedding``, ``id``."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, description="free-text query (truncated to the model's context like CLIP)")
    image: str | None = Field(None, description="base64 image, optionally as a data: URI")
    embedding: list[float] | None = Field(None, description="a query vector of the index's dimension")
    id: str | int | None = Field(None, description="an item id: 'more like this' (the item itself is excluded)")
    k: int = Field(K_DEFAULT, ge=1, le=K_MAX)
    offset: int = Field(0, ge=0, le=OFFSET_MAX, description="skip this many results (paging)")
    min_score: float | None = Field(None, ge=-1, le=1, description="drop results scoring below this")
    ef: int | None = Field(None, ge=1, le=EF_MAX, description="HNSW search breadth (default: the index's)")
    language: str | None = Field(None, description="source-language code (NLLB bundles, e.g. 'fra_Latn'); "
                                                   "other models reject it")


class SearchForm(BaseModel):
    """multipart/form-data: an ``image`` file, or a ``text`` / ``id`` field; parameters as fields."""

    image: bytes | None = Field(None, json_schema_extra={"format": "binary"})
    text: str | None = None
    id: str | None = None
    k: int = Field(K_DEFAULT, ge=1, le=K_MAX)
    offset: int = Field(0, ge=0, le=OFFSET_MAX)
    min_score: float | None = None
    ef: int | None = None
    language: str | None = None


class Result(BaseModel):
    id: str | int
    uri: str | None
    score: float = Field(description="cosine similarity (inner product of L2-normalised embeddings)")
    metadata: dict[str, Any]
    image_url: str | None = Field(description="/items/{id}/image, a presigned S3 URL, or null")
    thumbnail_url: str | None


class SearchResponse(BaseModel):
    results: list[Result]
    query: dict[str, Any] = Field(description="type (text|image|embedding|id) and what the service made of it: "
                                              "text + truncated, bytes/width/height, dim, id; k, offset, ...")
    model: str
    index_version: str
    took_ms: float


class EmbeddingsJSON(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | list[str] | None = Field(None, description=f"one text or a list (at most {MAX_EMBED_TEXTS})")
    image: str | list[str] | None = Field(None, description=f"one base64 image or a list (at most {MAX_EMBED_IMAGES})")
    language: str | None = Field(None, description="source-language code (NLLB bundles, e.g. 'fra_Latn'); "
                                                   "other models reject it")


class EmbeddingsResponse(BaseModel):
    text_embeddings: list[list[float]] | None = Field(None, description="one L2-normalised vector per text, in order")
    text_truncated: list[bool] | None = None
    image_embeddings: list[list[float]] | None = Field(None, description="one L2-normalised vector per image")
    model: str
    dim: int
    model_fingerprint: str
    normalized: bool = True
    took_ms: float


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "bad input"},
    401: {"model": ErrorResponse, "description": "missing or wrong x-api-key (when API_KEY is set)"},
    413: {"model": ErrorResponse, "description": "image or body over the size limit"},
    415: {"model": ErrorResponse, "description": "unsupported content type"},
    503: {"model": ErrorResponse, "description": "model or index not available"},
}


def request_body(*content: tuple[str, type[BaseModel]]) -> dict[str, Any]:
    """An ``openapi_extra`` requestBody listing each media type with the model's (flat) JSON schema."""
    return {"requestBody": {"required": True, "content": {
        media: {"schema": model.model_json_schema()} for media, model in content}}}
