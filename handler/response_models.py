"""Pydantic models of the HTTP API's responses: they document them in the OpenAPI document (the routes
build plain dicts). Keep them in step with docs/api.md."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["DuplicateGroup", "DuplicatesResponse", "EmbeddingsResponse", "Result", "SearchResponse"]


class Result(BaseModel):
    id: str | int
    uri: str | None = Field(
        description="the image's path relative to the collection (local folder or s3:// "
        "prefix), an http(s) URL as indexed, or null"
    )
    score: float = Field(description="cosine similarity (inner product of L2-normalised embeddings)")
    metadata: dict[str, Any]
    image_url: str | None = Field(description="/items/{id}/image, a presigned S3 URL, or null")
    thumbnail_url: str | None
    duplicates: list[str | int] | None = Field(
        None, description="with dedupe only: ids of the near-duplicate results this one absorbed"
    )


class SearchResponse(BaseModel):
    results: list[Result]
    query: dict[str, Any] = Field(
        description="type (text|image|embedding|id) and what the service made of it: "
        "text + truncated, bytes/width/height, dim, id; k, offset, ...; filter + matching when filtered"
    )
    model: str
    index_version: str
    took_ms: float


class EmbeddingsResponse(BaseModel):
    text_embeddings: list[list[float]] | None = Field(
        None, description="one L2-normalised vector per text, in order"
    )
    text_truncated: list[bool] | None = None
    image_embeddings: list[list[float]] | None = Field(None, description="one L2-normalised vector per image")
    model: str
    dim: int
    model_fingerprint: str
    normalized: bool = True
    took_ms: float


class DuplicateGroup(BaseModel):
    count: int = Field(description="how many items the group holds (``items`` shows at most ``per_group``)")
    score: float = Field(description="the lowest similarity of a member to the representative")
    items: list[Result] = Field(
        description="the representative first (score 1.0), then the others by similarity to it"
    )


class DuplicatesResponse(BaseModel):
    available: bool = Field(description="false: this index version was built without the duplicate finder")
    version: str = Field(description="the index version the groups belong to")
    threshold: float | None = Field(description="cosine similarity at or above which items were linked")
    k: int | None = Field(description="neighbours looked up per item when the groups were computed")
    total: int = Field(description="how many groups the version has")
    limit: int
    offset: int
    groups: list[DuplicateGroup] = Field(description="largest first, then by the representative's row")
