"""Compound queries (issue 17): terms - a text, an image, an indexed item or a vector, each with a weight -
embedded with one encoder call per tower and combined into one query vector,
``normalise(sum_i w_i * normalise(e_i))``. Shared by ``POST /search`` and the terminal client
(:mod:`handler.search`); a single-term query is the one-term case (its vector unchanged)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from handler.core.errors import BadInputError
from handler.core.images import image_size

if TYPE_CHECKING:
    from handler.core.runtime import Embedder
    from handler.core.search import SearchIndex

__all__ = [
    "MAX_TERMS",
    "MAX_WEIGHT",
    "TERM_KINDS",
    "InvalidEmbeddingError",
    "Query",
    "Term",
    "UnknownItemError",
    "combine",
    "embed_terms",
    "find_label",
    "query_kind",
    "unit_vector",
]

MAX_TERMS = 16
MAX_WEIGHT = 1000.0
TERM_KINDS = ("text", "image", "id", "embedding")


class InvalidEmbeddingError(BadInputError):
    code = "invalid_embedding"


class UnknownItemError(BadInputError):
    code = "unknown_id"
    status = 404


@dataclass(frozen=True)
class Term:
    """One query term. ``value``: the text (str), image bytes, item id (str | int) or vector (floats).
    ``precut``: the text was cut before tokenizing. ``field``: how error messages name the term (e.g.
    ``'terms'[2].image``); empty for a single-term query (named by its kind)."""

    kind: str
    value: Any
    weight: float = 1.0
    precut: bool = False
    field: str = ""

    @property
    def name(self) -> str:
        return self.field or f"'{self.kind}'"


@dataclass
class Query:
    """A combined query: ``vector`` (float32, unit), ``exclude`` (labels of the items given as id terms:
    "more like this" never returns them), ``terms`` (what was made of each term, for the response) and
    ``kind``: which of the index's calibrated efs fits it (:func:`query_kind`)."""

    vector: np.ndarray
    exclude: frozenset[int]
    terms: list[dict[str, Any]]
    kind: str | None = None


def query_kind(terms: Sequence[Term]) -> str | None:
    """The query kind (:data:`handler.core.index_format.QUERY_KINDS`) whose calibrated ef a query of
    ``terms`` is searched with: "image" when every term is an image or a stored item (points of the images'
    own distribution), "text" when every term is a text, else None (raw vectors of unknown origin, mixed
    terms: the largest ef)."""
    kinds = {t.kind for t in terms}
    if kinds <= {"image", "id"}:
        return "image"
    return "text" if kinds == {"text"} else None


def find_label(index: SearchIndex, item_id: Any) -> int | None:
    """The index label of an id; "12" finds the integer id 12 and 12 the string id "12"."""
    label = index.label_for(item_id)
    if label is None and isinstance(item_id, str) and re.fullmatch(r"-?[0-9]{1,18}", item_id):
        label = index.label_for(int(item_id))
    if label is None and isinstance(item_id, int):
        label = index.label_for(str(item_id))
    return label


def unit_vector(values: Sequence[float], dim: int, name: str = "'embedding'") -> np.ndarray:
    """A query vector given as numbers -> float32 unit vector of the index's dimension."""
    if len(values) != dim:
        raise InvalidEmbeddingError(f"{name} has {len(values)} values, the index's dimension is {dim}")
    vec = np.asarray(values, dtype=np.float64)
    scale = float(np.max(np.abs(vec)))
    if scale == 0.0:
        raise InvalidEmbeddingError(f"{name} is the zero vector")
    vec = vec / scale  # no overflow in the norm of huge values
    unit: np.ndarray = (vec / np.linalg.norm(vec)).astype(np.float32)
    return unit


def combine(vectors: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """``normalise(sum_i w_i * normalise(v_i))`` as float32. One positively weighted row is returned as it is
    (the single-term queries keep their exact vector). A zero sum (all weights zero, or terms that cancel
    out) is bad input."""
    rows = np.asarray(vectors, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if rows.ndim != 2 or len(rows) != len(w) or not len(w):
        raise ValueError(f"{len(w)} weights for vectors of shape {rows.shape}")
    if not np.all(np.isfinite(w)) or not np.any(w):
        raise InvalidEmbeddingError("the weights of the terms are all zero (or not finite)")
    if len(w) == 1 and w[0] > 0:
        return np.asarray(vectors[0], dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    total = (w[:, None] * (rows / np.maximum(norms, 1e-12))).sum(axis=0)
    size = float(np.linalg.norm(total))
    if not np.isfinite(size) or size <= 1e-6 * float(np.abs(w).sum()):
        raise InvalidEmbeddingError("the weighted sum of the terms is the zero vector (the terms cancel out)")
    out: np.ndarray = (total / size).astype(np.float32)
    return out


def _named(term: Term, error: BadInputError) -> BadInputError:
    """``error`` with the term's name in front (compound queries only: a single term's message is kept)."""
    return type(error)(f"{term.field}: {error.message}") if term.field else error


def embed_terms(
    terms: Sequence[Term], index: SearchIndex, embedder: Embedder, language: str | None = None
) -> Query:
    """Embed ``terms`` (ids and vectors first, then all texts in one text-tower call, then all images in one
    image-tower call, prepared like the index's images) and combine them by weight."""
    if not terms:
        raise BadInputError("a query needs at least one term")
    vectors: list[np.ndarray | None] = [None] * len(terms)
    described: list[dict[str, Any]] = [{"type": t.kind} for t in terms]
    exclude: set[int] = set()
    for i, term in enumerate(terms):
        if term.kind == "id":
            label = find_label(index, term.value)
            if label is None:
                raise _named(
                    term, UnknownItemError(f"no item with id {term.value!r} in index version {index.version}")
                )
            vectors[i] = index.embedding(label)
            exclude.add(label)
            described[i]["id"] = term.value
        elif term.kind == "embedding":
            vectors[i] = unit_vector(term.value, index.dim, term.name)
            described[i]["dim"] = len(term.value)
        elif term.kind not in TERM_KINDS:
            raise ValueError(f"unknown term kind {term.kind!r}")
    texts = [i for i, t in enumerate(terms) if t.kind == "text"]
    if texts:
        ids, truncated = embedder.tokenize_with_info([terms[i].value for i in texts], language)
        for i, row, cut in zip(texts, embedder.embed_tokens(ids), truncated, strict=True):
            vectors[i] = row
            described[i].update(text=terms[i].value, truncated=bool(cut or terms[i].precut))
    images = [i for i, t in enumerate(terms) if t.kind == "image"]
    if images:
        options = index.image_options  # queries are prepared like the index's images
        prepare = embedder.preprocessor_for(options)
        pixels = []
        for i in images:
            try:
                img = embedder.decode(terms[i].value, options)
            except BadInputError as e:
                raise _named(terms[i], e) from None
            width, height = image_size(img)
            described[i].update(bytes=len(terms[i].value), width=width, height=height)
            pixels.append(prepare(img))
        for i, row in zip(images, embedder.embed_pixels(np.stack(pixels)), strict=True):
            vectors[i] = row
    stacked = np.stack([v for v in vectors if v is not None])
    vector = combine(stacked, [t.weight for t in terms])
    for d, t in zip(described, terms, strict=True):
        d["weight"] = t.weight
    return Query(vector, frozenset(exclude), described, query_kind(terms))
