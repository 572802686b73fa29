"""k-NN restricted to the labels a boolean mask allows: always ``k`` results when ``k`` allowed items exist.

The search itself is :meth:`SearchIndex.search` with ``allowed=`` (:mod:`handler.core.shards`): hnswlib's
filtered graph walk when most items are allowed, an exact scan over the allowed vectors when few are (the
switch points, measured: :data:`~handler.core.shards.FILTER_EXACT_BELOW` and ``..._HNSW_VECTORS``). This
module is the service's view of it: :class:`FilteredIndex` is what compound queries and dedupe search when
a request has a filter.
"""

from __future__ import annotations

import numpy as np

from handler.core.search import Hit, SearchIndex

__all__ = ["FilteredIndex", "filtered_search"]


def filtered_search(
    index: SearchIndex,
    vectors: np.ndarray,
    k: int,
    mask: np.ndarray,
    *,
    offset: int = 0,
    ef: int | None = None,
    min_score: float | None = None,
    switch: float | None = None,
    kind: str | None = None,
) -> list[list[Hit]]:
    """Like :meth:`SearchIndex.search` (ranks ``offset .. offset+k-1`` per query row, cut at ``min_score``),
    over the labels where ``mask`` (``bool[len(index.items)]``) is True only. ``switch``: the allowed fraction
    below which the exact scan is used (default: the measured one for where the vectors are)."""
    allowed = np.asarray(mask, dtype=bool)
    if allowed.shape != (len(index.items),):
        raise ValueError(f"mask must have shape ({len(index.items)},), got {allowed.shape}")
    return index.search(
        vectors, k, offset, ef=ef, min_score=min_score, allowed=allowed, exact_below=switch, kind=kind
    )


class FilteredIndex:
    """A :class:`SearchIndex` seen through a filter: searches return only labels where ``mask`` is True
    (:func:`filtered_search`), ``count`` is the number of those that are live (tombstoned rows never come
    back). What compound queries and dedupe (:func:`handler.core.dedupe.ranked`) search when a request has a
    filter."""

    def __init__(self, index: SearchIndex, mask: np.ndarray):
        self.index = index
        self.mask = mask
        self.count = int(np.count_nonzero(np.asarray(mask, dtype=bool) & index.live_mask()))
        self.dim = index.dim

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        offset: int = 0,
        ef: int | None = None,
        min_score: float | None = None,
        kind: str | None = None,
    ) -> list[list[Hit]]:
        return filtered_search(
            self.index, vectors, k, self.mask, offset=offset, ef=ef, min_score=min_score, kind=kind
        )

    def embedding(self, label: int) -> np.ndarray:
        return self.index.embedding(label)
