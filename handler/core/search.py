"""Searching one loaded index version: :class:`SearchIndex` over an hnswlib index and its items."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from handler.core.errors import ArtifactError, BadInputError
from handler.core.index_format import (
    EMBEDDINGS_FILE,
)
from handler.core.preprocess import ImageOptions

__all__ = ["Hit", "SearchIndex"]


class Hit(NamedTuple):
    """One search result: hnswlib label (row number), inner-product score, and a copy of the item."""

    label: int
    score: float
    item: dict[str, Any]


class _EfGate:
    """Lets any number of searches run concurrently while they agree on ``ef``; a search that needs
    another ``ef`` waits until the running ones are done (hnswlib's ef is shared state of the index).
    Fair: once a search waits for another ef, later arrivals queue behind it, so none starves."""

    def __init__(self, index: Any, ef: int):
        self._index = index
        self._ef = ef
        self._active = 0
        self._waiters: list[tuple[object, int]] = []
        self._cond = threading.Condition()
        index.set_ef(ef)

    def acquire(self, ef: int) -> None:
        with self._cond:
            me = object()
            self._waiters.append((me, ef))
            while True:
                ahead = self._waiters[: next(i for i, w in enumerate(self._waiters) if w[0] is me)]
                if all(w_ef == ef for _, w_ef in ahead):
                    if self._ef == ef:
                        break
                    if not self._active:
                        self._index.set_ef(ef)
                        self._ef = ef
                        break
                self._cond.wait()
            self._waiters = [w for w in self._waiters if w[0] is not me]
            self._active += 1
            if self._waiters:
                self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._active -= 1
            if self._waiters:
                self._cond.notify_all()


class SearchIndex:
    """A loaded index version. Thread-safe for concurrent :meth:`search` calls.

    Attributes: ``version``, ``manifest``, ``dim``, ``count``, ``items`` (list of dicts, row = label;
    treat as read-only), ``model_fingerprint``, ``ef`` (default query ef), ``files_dir`` (local directory
    holding the version's files), ``image_options`` (how the builder prepared images: queries and
    thumbnails use the same).
    """

    def __init__(
        self,
        manifest: dict[str, Any],
        hnsw: Any | None,
        items: list[dict[str, Any]],
        files_dir: Path | None = None,
    ):
        self.manifest = manifest
        self.version: str = manifest["version"]
        self.dim: int = int(manifest["dim"])
        self.count: int = int(manifest["count"])
        self.model_fingerprint: str = manifest["model_fingerprint"]
        self.ef: int = int(manifest.get("ef", 64))
        self.image_options: ImageOptions = ImageOptions.from_manifest(manifest.get("image_preprocess"))
        self.items = items
        self.files_dir = files_dir
        self._hnsw = hnsw
        self._gate = _EfGate(hnsw, self.ef) if hnsw is not None and self.count else None
        self._ids: dict[Any, int] | None = None
        self._ids_lock = threading.Lock()
        self._embeddings: np.ndarray | None = None
        self._emb_lock = threading.Lock()

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
    ) -> list[list[Hit]]:
        """Top hits per query row ranked by inner product, descending.

        ``vectors``: ``[n, dim]`` or ``[dim]`` (L2-normalised query embeddings). Returns one list per
        row, holding ranks ``offset .. offset+k-1`` (fewer when the index runs out), restricted to
        ``score >= min_score`` when given. ``ef`` defaults to the manifest's and is raised to
        ``k + offset`` when smaller. An empty index returns empty lists.
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
        want = min(int(k) + int(offset), self.count)
        if n == 0 or want <= offset or self._gate is None:
            return [[] for _ in range(n)]
        queries = np.ascontiguousarray(queries)
        ef_eff = max(int(ef if ef is not None else self.ef), want)
        labels, distances = self._knn(queries, want, ef_eff)
        results: list[list[Hit]] = []
        for row_labels, row_dist in zip(labels, distances, strict=True):
            hits: list[Hit] = []
            for label, dist in zip(row_labels[offset:], row_dist[offset:], strict=True):
                score = float(1.0 - dist)
                if min_score is not None and score < min_score:
                    break  # ranked by score: everything after is lower
                hits.append(Hit(int(label), score, dict(self.items[int(label)])))
            results.append(hits)
        return results

    def _knn(self, queries: np.ndarray, want: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        assert self._gate is not None
        for attempt_ef in (ef, max(ef * 4, 256), max(ef, self.count)):
            self._gate.acquire(attempt_ef)
            try:
                labels, distances = self._hnsw.knn_query(queries, k=want, num_threads=1)
                return labels, distances
            except RuntimeError:
                continue  # "Cannot return the results in a contiguous 2D array": search wider
            finally:
                self._gate.release()
        raise ArtifactError(f"index version {self.version}: HNSW search returned fewer than {want} results")

    def _id_map(self) -> dict[Any, int]:
        if self._ids is None:
            with self._ids_lock:
                if self._ids is None:
                    ids: dict[Any, int] = {}
                    for label, item in enumerate(self.items):
                        if isinstance(item, dict) and "id" in item:
                            ids.setdefault(item["id"], label)
                    self._ids = ids
        return self._ids

    def label_for(self, item_id: Any) -> int | None:
        """The label (row) of the item whose ``id`` is ``item_id``, or None."""
        return self._id_map().get(item_id)

    def get_item(self, item_id: Any) -> dict[str, Any] | None:
        """A copy of the item whose ``id`` is ``item_id``, or None."""
        label = self.label_for(item_id)
        return None if label is None else dict(self.items[label])

    def embedding(self, label: int) -> np.ndarray:
        """The stored float32 ``[dim]`` vector of ``label`` (a copy): from ``embeddings.npy`` when it is
        available locally (memory-mapped on first use), otherwise from the HNSW index itself."""
        label = int(label)
        if not 0 <= label < self.count:
            raise IndexError(f"label {label} out of range for an index of {self.count} items")
        emb = self._embeddings_array()
        if emb is not None:
            return np.array(emb[label], dtype=np.float32)
        assert self._hnsw is not None
        return np.asarray(self._hnsw.get_items([label], return_type="numpy")[0], dtype=np.float32)

    def _embeddings_array(self) -> np.ndarray | None:
        if self._embeddings is None and self.files_dir is not None:
            path = self.files_dir / EMBEDDINGS_FILE
            if EMBEDDINGS_FILE in self.manifest["files"] and path.is_file():
                with self._emb_lock:
                    if self._embeddings is None:
                        try:
                            arr = np.load(path, mmap_mode="r", allow_pickle=False)
                        except (OSError, ValueError) as e:
                            raise ArtifactError(f"{path}: cannot load ({e})") from None
                        if arr.shape != (self.count, self.dim):
                            raise ArtifactError(
                                f"{path}: shape {arr.shape} != manifest ({self.count}, {self.dim})"
                            )
                        self._embeddings = arr
        return self._embeddings
