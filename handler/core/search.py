"""Searching one loaded index version: :class:`SearchIndex` over its shards (:mod:`handler.core.shards`)
and its items."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from handler.core.errors import ArtifactError, BadInputError
from handler.core.images import ImageOptions
from handler.core.index_format import EMBEDDINGS_FILE
from handler.core.shards import Shard, ShardSet

__all__ = ["Hit", "SearchIndex"]


class Hit(NamedTuple):
    """One search result: hnswlib label (row number), inner-product score, and a copy of the item."""

    label: int
    score: float
    item: dict[str, Any]


class SearchIndex:
    """A loaded index version. Thread-safe for concurrent :meth:`search` calls.

    Attributes: ``version``, ``manifest``, ``dim``, ``count`` (live items), ``items`` (list of dicts, row =
    global label, tombstoned rows included so labels stay stable; treat as read-only; :meth:`is_live`
    tells them apart), ``model_fingerprint``, ``ef`` (default query ef: the manifest's, measured by the
    builder), ``ef_by_query`` (the manifest's per query kind; empty: ``ef`` for all), ``files_dir`` (local
    directory of the version's own files), ``image_options`` (how the builder prepared images: queries and
    thumbnails use the same), ``shards`` (:class:`ShardSet`), ``filter_exact_below`` (None:
    :data:`handler.core.shards.FILTER_EXACT_BELOW`, or ``..._HNSW_VECTORS`` without local embeddings).

    ``hnsw``: one hnswlib index holding every row (a single shard), or None when ``shards`` is given.
    """

    def __init__(
        self,
        manifest: dict[str, Any],
        hnsw: Any | None,
        items: list[dict[str, Any]],
        files_dir: Path | None = None,
        *,
        shards: list[Shard] | None = None,
    ):
        self.manifest = manifest
        self.version: str = manifest["version"]
        self.dim: int = int(manifest["dim"])
        self.count: int = int(manifest["count"])
        self.model_fingerprint: str = manifest["model_fingerprint"]
        self.ef: int = int(manifest.get("ef", 64))
        self.ef_by_query: dict[str, int] = dict(manifest.get("ef_by_query") or {})
        self.image_options: ImageOptions = ImageOptions.from_manifest(manifest.get("image_preprocess"))
        self.items = items
        self.files_dir = files_dir
        self.filter_exact_below: float | None = None  # None: FILTER_EXACT_BELOW(_HNSW_VECTORS), by locality
        if shards is None:
            emb = None
            if files_dir is not None and EMBEDDINGS_FILE in manifest.get("files", {}):
                emb = files_dir / EMBEDDINGS_FILE
            shards = [Shard(hnsw, 0, len(items), (), self.ef, emb)]
        self.shards = ShardSet(shards)
        self._ids: dict[Any, int] | None = None
        self._ids_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SearchIndex(version={self.version!r}, count={self.count}, dim={self.dim})"

    def __len__(self) -> int:
        return self.count

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        offset: int = 0,
        ef: int | None = None,
        min_score: float | None = None,
        allowed: np.ndarray | None = None,
        exact_below: float | None = None,
        kind: str | None = None,
    ) -> list[list[Hit]]:
        """Top hits per query row ranked by inner product, descending.

        ``vectors``: ``[n, dim]`` or ``[dim]`` (L2-normalised query embeddings). Returns one list per
        row, holding ranks ``offset .. offset+k-1`` (fewer when the index runs out), restricted to
        ``score >= min_score`` when given. ``ef`` defaults to each shard's (measured by the builder) and
        is raised to ``k + offset`` when smaller. An empty index returns empty lists.

        ``allowed``: only these items may be returned - a boolean mask over global labels
        (``len(items)`` long) or an array of global labels; ``k`` hits come back whenever ``k + offset``
        allowed live items exist (exact search when they are few, see ``filter_exact_below``).
        ``exact_below``: this call's switch point instead (0: always HNSW; above 1: always exact).
        ``kind``: what the query vectors are (:data:`handler.core.index_format.QUERY_KINDS`: each shard's
        ef calibrated for that kind; None: the largest, for vectors of unknown origin).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise BadInputError(f"k must be a positive integer, got {k!r}")
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
            raise BadInputError(f"offset must be a non-negative integer, got {offset!r}")
        if ef is not None and (isinstance(ef, bool) or not isinstance(ef, (int, np.integer)) or ef < 1):
            raise BadInputError(f"ef must be a positive integer, got {ef!r}")
        if min_score is not None and not np.isfinite(min_score):
            raise BadInputError(f"min_score must be a finite number, got {min_score!r}")
        queries = np.asarray(vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(
                f"query vectors must have shape [n, {self.dim}] or [{self.dim}], got {queries.shape}"
            )
        if not np.all(np.isfinite(queries)):
            raise ValueError("query vectors contain NaN or infinity")
        n = queries.shape[0]
        mask = None if allowed is None else self._allowed_mask(allowed)
        available = self.count if mask is None else int(np.count_nonzero(mask))
        want = min(int(k) + int(offset), available)
        if n == 0 or want <= offset:
            return [[] for _ in range(n)]
        queries = np.ascontiguousarray(queries)
        try:
            if mask is None:
                labels, scores = self.shards.search(queries, want, None if ef is None else int(ef), kind)
            else:
                labels, scores = self.shards.search_allowed(
                    queries, want, None if ef is None else int(ef), mask, _switch(exact_below, self), kind
                )
        except ArtifactError as e:
            raise ArtifactError(f"index version {self.version}: {e.message}") from None
        results: list[list[Hit]] = []
        for row_labels, row_scores in zip(labels, scores, strict=True):
            hits: list[Hit] = []
            for label, score in zip(row_labels[offset:], row_scores[offset:], strict=True):
                if min_score is not None and float(score) < min_score:
                    break  # ranked by score: everything after is lower
                hits.append(Hit(int(label), float(score), dict(self.items[int(label)])))
            results.append(hits)
        return results

    def _allowed_mask(self, allowed: np.ndarray) -> np.ndarray:
        arr = np.asarray(allowed)
        rows = len(self.items)
        if arr.dtype == bool:
            if arr.shape != (rows,):
                raise ValueError(f"allowed mask must have shape ({rows},), got {arr.shape}")
            mask = arr
        else:
            labels = arr.astype(np.int64).ravel()
            if labels.size and (labels.min() < 0 or labels.max() >= rows):
                raise ValueError(f"allowed labels must lie in [0, {rows})")
            mask = np.zeros(rows, dtype=bool)
            mask[labels] = True
        live: np.ndarray = mask & self.live_mask()
        return live

    def live_mask(self) -> np.ndarray:
        """``bool[len(items)]``: True for the rows that are items of this version (not tombstoned)."""
        live = np.ones(len(self.items), dtype=bool)
        for shard in self.shards.shards:
            live[shard.offset + shard.deleted] = False
        return live

    def is_live(self, label: int) -> bool:
        """Whether ``label`` is an item of this version (not a tombstoned row of a carried shard)."""
        return 0 <= int(label) < len(self.items) and not self.shards.is_deleted(int(label))

    def _id_map(self) -> dict[Any, int]:
        if self._ids is None:
            with self._ids_lock:
                if self._ids is None:
                    ids: dict[Any, int] = {}
                    dead = {s.offset + int(d) for s in self.shards.shards for d in s.deleted}
                    for label, item in enumerate(self.items):
                        if isinstance(item, dict) and "id" in item and label not in dead:
                            ids.setdefault(item["id"], label)
                    self._ids = ids
        return self._ids

    def label_for(self, item_id: Any) -> int | None:
        """The label (row) of the live item whose ``id`` is ``item_id``, or None."""
        return self._id_map().get(item_id)

    def get_item(self, item_id: Any) -> dict[str, Any] | None:
        """A copy of the live item whose ``id`` is ``item_id``, or None."""
        label = self.label_for(item_id)
        return None if label is None else dict(self.items[label])

    def embedding(self, label: int) -> np.ndarray:
        """The stored float32 ``[dim]`` vector of ``label`` (a copy): from the shard's ``embeddings.npy``
        when it is available locally (memory-mapped on first use), otherwise from the HNSW index itself."""
        label = int(label)
        if not 0 <= label < len(self.items):
            raise IndexError(f"label {label} out of range for an index of {len(self.items)} rows")
        shard = self.shards.shard_of(label)
        local = np.array([label - shard.offset], dtype=np.int64)
        return np.array(shard.vectors(local)[0], dtype=np.float32)


def _switch(call: float | None, index: SearchIndex) -> float:
    """The filtered-search switch point: the call's, else the index's, else -1 (the measured default)."""
    chosen = call if call is not None else index.filter_exact_below
    return -1.0 if chosen is None else float(chosen)
