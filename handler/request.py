"""The validated requests the routes work with: what :mod:`handler.schemas` builds from a JSON body, a form
or a raw image, and what the request log may say about them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from handler.core.filters import FilterSpec
from handler.core.query import Term
from handler.limits import K_DEFAULT

__all__ = ["QUERY_FIELDS", "EmbeddingsRequest", "SearchRequest"]

QUERY_FIELDS = ("text", "image", "embedding", "id", "terms")


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
