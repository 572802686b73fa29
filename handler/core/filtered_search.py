"""k-NN restricted to the labels a boolean mask allows: always ``k`` results when ``k`` allowed items exist.

Two ways, chosen by the allowed fraction (:data:`SWITCH_FRACTION`, measured by ``bench/filtered.py``;
:data:`SWITCH_FRACTION_HNSW_VECTORS` when the vectors must be read out of hnswlib):

* most items allowed: hnswlib's own filtered search (``knn_query(filter=...)``): the graph walk skips
  disallowed labels but keeps going until it holds ``ef`` allowed ones, so nothing is lost to truncation;
* few allowed: an exact inner-product scan over the allowed subset's vectors (faster than walking a graph
  whose neighbours are mostly filtered out, and exact).

MERGE SEAM: :func:`filtered_search` is the only entry point the service uses. When
``SearchIndex.search(..., allowed=mask)`` (handler/core/search.py) lands, its body becomes that call and this
module's private search goes away (keep :data:`SWITCH_FRACTION` or the measured value there).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from handler.core.errors import ArtifactError
from handler.core.search import Hit, SearchIndex

__all__ = ["SWITCH_FRACTION", "SWITCH_FRACTION_HNSW_VECTORS", "FilteredIndex", "filtered_search"]

#: Below this fraction of allowed items the exact scan over the subset (vectors from embeddings.npy, memory-
#: mapped: a local index) beats hnswlib's filtered search. ``python -m bench.filtered 100000 25 40``: 100k
#: clustered 512-d vectors, M=16, ef 128, k 10, one query at a time, p50 ms (on a 2-core machine under load
#: ~6, so absolute times are inflated; the ratio is the point):
#:
#:     allowed   hnsw filter   exact (embeddings.npy)   exact (hnswlib get_items)
#:     100%           0.77          463                    24667
#:      30%           3.3           188                     8423
#:      10%          35              79                     2713
#:       3%         147              26                      719
#:       1%         279              28                      274
#:     0.1%        1020               0.09                    12
#:
#: The ratio crosses 1 near 7% (log interpolation between 10% and 3%): 5% keeps a margin for the exact scan,
#: whose cost grows with the number of allowed vectors (at 1M items the crossing moves lower, ~1/sqrt(n)).
SWITCH_FRACTION = 0.05
#: The same when the index has no local embeddings.npy (loaded from S3): reading the subset's vectors out of
#: hnswlib (``get_items``) costs ~0.25 ms each under that load, so the graph walk wins down to ~1%.
SWITCH_FRACTION_HNSW_VECTORS = 0.01


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
) -> list[list[Hit]]:
    """Like :meth:`SearchIndex.search` (ranks ``offset .. offset+k-1`` per query row, cut at ``min_score``),
    over the labels where ``mask`` (``bool[count]``) is True only. ``switch``: the allowed fraction below
    which the exact scan is used (default: by where the vectors are, see the constants)."""
    queries = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    allowed = np.asarray(mask, dtype=bool)
    if allowed.shape != (index.count,):
        raise ValueError(f"mask must have shape ({index.count},), got {allowed.shape}")
    n_allowed = int(np.count_nonzero(allowed))
    want = min(int(k) + int(offset), n_allowed)
    if want <= offset or queries.shape[0] == 0:
        return [[] for _ in range(queries.shape[0])]
    if n_allowed == index.count:  # nothing filtered out
        return index.search(queries, k, offset, ef=ef, min_score=min_score)
    if switch is None:
        local = index._embeddings_array() is not None  # private: the seam (SearchIndex grows this)
        switch = SWITCH_FRACTION if local else SWITCH_FRACTION_HNSW_VECTORS
    found = _hnsw_filtered(index, queries, want, ef, allowed) if n_allowed >= switch * index.count else None
    if found is None:  # selective (or the graph walk came up short): exact over the subset
        found = _exact(index, queries, want, np.flatnonzero(allowed))
    results: list[list[Hit]] = []
    for labels, scores in zip(*found, strict=True):
        hits: list[Hit] = []
        for label, score in zip(labels[offset:], scores[offset:], strict=True):
            if min_score is not None and score < min_score:
                break
            hits.append(Hit(int(label), float(score), dict(index.items[int(label)])))
        results.append(hits)
    return results


def _hnsw_filtered(
    index: SearchIndex, queries: np.ndarray, want: int, ef: int | None, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, scores) from hnswlib's filtered search, or None when it could not return ``want`` per row."""
    gate, hnsw = index._gate, index._hnsw  # private: the seam (SearchIndex.search grows this)
    if gate is None or hnsw is None:
        return None
    ef_eff = max(int(ef if ef is not None else index.ef), want)
    flags = allowed.tobytes()  # one byte per label: indexing bytes is far cheaper than a numpy scalar

    def keep(label: int) -> bool:
        return flags[label] == 1

    for attempt_ef in (ef_eff, max(ef_eff * 4, 256)):
        gate.acquire(attempt_ef)
        try:
            labels, distances = hnsw.knn_query(queries, k=want, num_threads=1, filter=keep)
            return labels, 1.0 - distances
        except RuntimeError:
            continue  # fewer than `want` found (a disconnected region): search wider, then exactly
        finally:
            gate.release()
    return None


def _subset_vectors(index: SearchIndex, labels: np.ndarray) -> np.ndarray:
    emb = index._embeddings_array()
    if emb is not None:
        return np.asarray(emb[labels], dtype=np.float32)
    if index._hnsw is None:
        raise ArtifactError(f"index version {index.version}: no vectors to search")
    vecs: Any = index._hnsw.get_items(labels, return_type="numpy")
    return np.asarray(vecs, dtype=np.float32)


def _exact(
    index: SearchIndex, queries: np.ndarray, want: int, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top ``want`` of ``labels`` by inner product (ties: lower label first)."""
    scores = queries @ _subset_vectors(index, labels).T
    if want < scores.shape[1]:
        part = np.argpartition(-scores, want - 1, axis=1)[:, :want]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    top = np.take_along_axis(scores, part, 1)
    order = np.lexsort((np.take(labels, part), -top), axis=1)
    idx = np.take_along_axis(part, order, 1)
    return np.take(labels, idx), np.take_along_axis(scores, idx, 1)


class FilteredIndex:
    """A :class:`SearchIndex` seen through a filter: searches return only labels where ``mask`` is True
    (:func:`filtered_search`), ``count`` is the number of those. What compound queries and dedupe
    (:func:`handler.core.dedupe.ranked`) search when a request has a filter."""

    def __init__(self, index: SearchIndex, mask: np.ndarray):
        self.index = index
        self.mask = mask
        self.count = int(np.count_nonzero(mask))
        self.dim = index.dim

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        offset: int = 0,
        ef: int | None = None,
        min_score: float | None = None,
    ) -> list[list[Hit]]:
        return filtered_search(self.index, vectors, k, self.mask, offset=offset, ef=ef, min_score=min_score)

    def embedding(self, label: int) -> np.ndarray:
        return self.index.embedding(label)
