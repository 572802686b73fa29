"""Ranked results of one query vector, with items left out (the id terms of "more like this") and, on request,
near-duplicates collapsed: walking the results by score, a result whose embedding has a cosine of at least
``threshold`` with an already kept result is absorbed by the most similar one instead of being listed.

Collapsing needs more candidates than ``offset + k``: they are fetched in growing rounds (at most
:data:`MAX_CANDIDATES`) until ``offset + k`` distinct results are found or the index (or ``min_score``) runs
out. Shared by ``POST /search`` and the terminal client."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from handler.core.search import Hit

if TYPE_CHECKING:
    from handler.core.search import SearchIndex

__all__ = ["DEFAULT_THRESHOLD", "MAX_CANDIDATES", "Ranked", "collapse", "ranked"]

#: Cosine at or above which two results are duplicates: the lowest measured threshold that merges no two
#: distinct images of the demo collection (their nearest-neighbour cosines reach 0.9965: the demo model
#: encodes little but the class) while exact, PNG and upscaled copies (100%) and JPEG q75 re-encodes (98%)
#: collapse.
#: scripts/measure_dedupe_threshold.py; table in docs/api.md, "Near-duplicates".
DEFAULT_THRESHOLD = 0.997
#: Most candidates one deduplicated search looks at (bounds its cost: one HNSW search of this breadth and
#: this many stored vectors read).
MAX_CANDIDATES = 2048


class Searchable(Protocol):
    """What :func:`ranked` searches: a :class:`SearchIndex` or a view of one (a filtered index)."""

    count: int
    dim: int

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        offset: int = 0,
        ef: int | None = None,
        min_score: float | None = None,
        kind: str | None = None,
    ) -> list[list[Hit]]: ...

    def embedding(self, label: int) -> np.ndarray: ...


class Ranked(NamedTuple):
    """A result and the results it absorbed (ranked by score; empty without dedupe)."""

    hit: Hit
    duplicates: list[Hit]


def collapse(hits: Sequence[Hit], vectors: np.ndarray, threshold: float, limit: int) -> list[Ranked]:
    """Greedy near-duplicate collapse of ``hits`` (ranked) whose unit embeddings are the rows of ``vectors``.
    At most ``limit`` results are kept; the later hits are still absorbed by them when close enough."""
    rows = np.asarray(vectors, dtype=np.float32)
    kept: list[int] = []
    groups: list[list[Hit]] = []
    for i in range(len(hits)):
        if kept:
            sims = rows[kept] @ rows[i]
            best = int(np.argmax(sims))
            if sims[best] >= threshold:
                groups[best].append(hits[i])
                continue
        if len(kept) < limit:
            kept.append(i)
            groups.append([])
    return [Ranked(hits[i], group) for i, group in zip(kept, groups, strict=True)]


def ranked(
    index: SearchIndex | Searchable,
    vector: np.ndarray,
    k: int,
    offset: int = 0,
    *,
    ef: int | None = None,
    min_score: float | None = None,
    exclude: frozenset[int] = frozenset(),
    dedupe: float | None = None,
    embedding: Callable[[int], np.ndarray] | None = None,
    **search_options: Any,
) -> list[Ranked]:
    """Results ``offset .. offset + k - 1`` of ``vector`` on ``index`` (``search_options`` go to
    :meth:`SearchIndex.search`), without the labels in ``exclude``; with ``dedupe`` (a cosine threshold)
    near-duplicates collapsed. ``embedding``: a label's stored vector (default ``index.embedding``)."""

    def search(n: int) -> list[Hit]:
        return index.search(vector, n, 0, ef=ef, min_score=min_score, **search_options)[0]

    if dedupe is None:
        if not exclude:
            hits = index.search(vector, k, offset, ef=ef, min_score=min_score, **search_options)[0]
            return [Ranked(h, []) for h in hits]
        hits = [h for h in search(k + offset + len(exclude)) if h.label not in exclude]
        return [Ranked(h, []) for h in hits[offset : offset + k]]
    if index.count == 0:
        return []
    want = offset + k
    stored = embedding or index.embedding
    cap = min(index.count, MAX_CANDIDATES)
    n = min(cap, max(2 * want, want + 32) + len(exclude))
    while True:
        found = search(n)
        hits = [h for h in found if h.label not in exclude]
        vectors = np.stack([stored(h.label) for h in hits]) if hits else np.zeros((0, index.dim), np.float32)
        groups = collapse(hits, vectors, dedupe, want)
        exhausted = len(found) < n or n >= cap
        if len(groups) >= want or exhausted:
            return groups[offset:want]
        n = min(cap, n * 4)
