"""Searching the shards of a loaded index version: each shard is one hnswlib index holding global labels
``offset .. offset + count - 1``; K shards are queried in parallel threads (hnswlib releases the GIL in
``knn_query``) and merged by score. Tombstoned labels (``mark_deleted``) never come back. Filtered search
(``allowed`` labels) goes through hnswlib's ``filter=`` above :data:`FILTER_EXACT_BELOW`, exact below."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from handler.core.cpus import usable_cpus
from handler.core.errors import ArtifactError
from handler.core.hnsw_vectors import HnswVectors

__all__ = ["FILTER_EXACT_BELOW", "FILTER_EXACT_BELOW_HNSW_VECTORS", "Shard", "ShardSet"]

#: Allowed fraction of live items below which a filtered search is exact (numpy over the allowed vectors,
#: read in place from the shard's embeddings.npy or its HNSW file) instead of HNSW with a filter callable.
#: BENCHMARKS.md "Search features" (quiet machine, ``make bench``): 100k clustered 512-d vectors, M=16,
#: ef_construction 100, k 10, one query per call, p50 ms:
#:
#:     allowed   hnsw filter   exact (embeddings.npy)
#:     100%           1.15         71.6
#:      30%          10.3          26.5
#:      10%          76            11.0
#:       3%         429             2.3
#:       1%         218             0.49
#:     0.1%         215             0.15
#:
#: The ratio crosses 1 between 10% and 30%, near 20% (the exact scan grows with the allowed vectors, the
#: filtered walk with their inverse).
FILTER_EXACT_BELOW = 0.2
#: The same when a shard's vectors can only be copied out of hnswlib (``get_items``, ~75 us a vector: an
#: in-memory index without its files). A loaded index reads them in place from embeddings.npy or from its
#: HNSW file (handler.core.hnsw_vectors), as fast, and uses :data:`FILTER_EXACT_BELOW`. Same table, 'exact
#: subset (get_items)' 7,462 / 2,233 / 739 / 183 / 48 / 5 ms: faster than the filtered walk at 3% (183 vs
#: 255 ms), not at 10% (739 vs 79 ms); the two cross near 3.5%.
FILTER_EXACT_BELOW_HNSW_VECTORS = 0.035

Result = tuple[np.ndarray, np.ndarray]  # (global labels int64 [n, k'], scores float32 [n, k'])


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


class Shard:
    """One loaded shard: an hnswlib index (tombstones already marked deleted), its first global label, its
    row count (deleted rows included), its default ef and (optionally) its local ``embeddings.npy``."""

    def __init__(
        self,
        index: Any,
        offset: int,
        count: int,
        deleted: Sequence[int] = (),
        ef: int = 64,
        embeddings_path: Path | None = None,
        ef_by_query: Mapping[str, int] | None = None,
        hnsw_path: Path | None = None,
    ):
        self.index = index
        self.offset = offset
        self.count = count
        self.deleted = np.asarray(sorted(deleted), dtype=np.int64)
        self.live = count - len(self.deleted)
        self.ef = ef
        self.ef_by_query = dict(ef_by_query or {})
        self.embeddings_path = embeddings_path
        self.gate = _EfGate(index, ef) if index is not None and self.live else None
        self._emb: np.ndarray | None = None
        self._emb_lock = threading.Lock()
        self._file = None if hnsw_path is None or index is None else HnswVectors(hnsw_path, count, index.dim)

    def ef_for(self, kind: str | None) -> int:
        """The calibrated ef for queries of ``kind`` (:data:`QUERY_KINDS`; None or unknown: the largest)."""
        return self.ef_by_query.get(kind, self.ef) if kind is not None else self.ef

    def live_mask(self) -> np.ndarray:
        mask = np.ones(self.count, dtype=bool)
        mask[self.deleted] = False
        return mask

    def knn(self, queries: np.ndarray, want: int, ef: int, allowed: np.ndarray | None = None) -> Result:
        """Top ``want`` (at most the live / allowed rows) per query; ``allowed``: local boolean mask."""
        limit = self.live if allowed is None else int(np.count_nonzero(allowed))
        k = min(want, limit)
        if k <= 0 or self.gate is None:
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
        kwargs: dict[str, Any] = {}
        if allowed is not None:
            flags = np.ascontiguousarray(allowed, dtype=bool).tobytes()  # bytes: far cheaper per call
            kwargs["filter"] = lambda label: flags[label] == 1
        for attempt_ef in (ef, max(ef * 4, 256), max(ef, self.count)):
            self.gate.acquire(attempt_ef)
            try:
                labels, distances = self.index.knn_query(queries, k=k, num_threads=1, **kwargs)
            except RuntimeError:
                continue  # "Cannot return the results in a contiguous 2D array": search wider
            finally:
                self.gate.release()
            return labels.astype(np.int64) + self.offset, (1.0 - distances).astype(np.float32)
        raise ArtifactError(f"HNSW search returned fewer than {k} results")

    def vectors(self, local: np.ndarray) -> np.ndarray:
        """Stored vectors of local labels: from ``embeddings.npy`` when local, else read in place from the
        HNSW file (:mod:`handler.core.hnsw_vectors`), else copied out of hnswlib (``get_items``, slow)."""
        emb = self.embeddings()
        if emb is not None:
            return np.asarray(emb[local], dtype=np.float32)
        if not len(local):
            return np.zeros((0, self.index.dim), np.float32)
        file = self._file
        if file is not None:
            try:
                return file.rows(local)
            except (OSError, ValueError):  # the cached file was evicted, or is not what it claims
                self._file = None
        return np.asarray(self.index.get_items(local, return_type="numpy"), dtype=np.float32)

    def has_local_vectors(self) -> bool:
        """Whether :meth:`vectors` reads stored vectors in place (``embeddings.npy`` or the HNSW file), not
        through hnswlib's ``get_items``."""
        if self._emb is not None or (self.embeddings_path is not None and self.embeddings_path.is_file()):
            return True
        return self._file is not None and self._file.path.is_file()

    def embeddings(self) -> np.ndarray | None:
        if self._emb is None and self.embeddings_path is not None and self.embeddings_path.is_file():
            with self._emb_lock:
                if self._emb is None:
                    path = self.embeddings_path
                    try:
                        arr = np.load(path, mmap_mode="r", allow_pickle=False)
                    except (OSError, ValueError) as e:
                        raise ArtifactError(f"{path}: cannot load ({e})") from None
                    if arr.ndim != 2 or arr.shape[0] != self.count:
                        raise ArtifactError(f"{path}: shape {arr.shape}, expected {self.count} rows")
                    self._emb = arr
        return self._emb


def _merge(parts: list[Result], want: int) -> Result:
    """Per query row, the ``want`` best of all parts by score (ties: lower label first)."""
    if len(parts) == 1:
        return parts[0]
    labels = np.concatenate([p[0] for p in parts], axis=1)
    scores = np.concatenate([p[1] for p in parts], axis=1)
    order = np.lexsort((labels, -scores), axis=1)[:, :want]
    return np.take_along_axis(labels, order, 1), np.take_along_axis(scores, order, 1)


class ShardSet:
    """The shards of one version, in label order, searched together."""

    def __init__(self, shards: list[Shard]):
        self.shards = shards
        self.rows = sum(s.count for s in shards)
        self.live = sum(s.live for s in shards)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._offsets = np.array([s.offset for s in shards], dtype=np.int64)
        self.parallel = usable_cpus() > 1  # shards searched in threads (hnswlib's knn_query releases the GIL)

    def shard_of(self, label: int) -> Shard:
        return self.shards[int(np.searchsorted(self._offsets, label, side="right")) - 1]

    def is_deleted(self, label: int) -> bool:
        shard = self.shard_of(label)
        local = label - shard.offset
        i = int(np.searchsorted(shard.deleted, local))
        return i < len(shard.deleted) and int(shard.deleted[i]) == local

    def _map(self, fn: Callable[[Shard], Result]) -> list[Result]:
        if len(self.shards) == 1 or not self.parallel:
            return [fn(s) for s in self.shards]
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(len(self.shards) - 1, thread_name_prefix="shard")
        # the calling thread searches the first shard while the pool searches the others: one thread
        # hand-off fewer per query, which is most of the cost of a second shard at small ef
        futures = [self._pool.submit(fn, s) for s in self.shards[1:]]
        try:
            first = fn(self.shards[0])
        finally:
            wait(futures)  # no search left running behind a failed one
        return [first, *(f.result() for f in futures)]

    def search(self, queries: np.ndarray, want: int, ef: int | None, kind: str | None = None) -> Result:
        """Top ``want`` over all shards; ``ef`` None: each shard's own for queries of ``kind`` (raised to
        ``want``)."""
        return _merge(self._map(lambda s: s.knn(queries, want, max(ef or s.ef_for(kind), want))), want)

    def search_allowed(
        self,
        queries: np.ndarray,
        want: int,
        ef: int | None,
        allowed: np.ndarray,
        exact_below: float,
        kind: str | None = None,
    ) -> Result:
        """Top ``want`` among the ``allowed`` global labels (a boolean mask over all rows, deleted rows
        already cleared): exact over the allowed vectors when they are a small fraction of the live items,
        else HNSW with a filter callable and ef raised by the inverse of the allowed fraction."""
        n_allowed = int(np.count_nonzero(allowed))
        fraction = n_allowed / max(self.live, 1)
        if exact_below < 0:  # the measured default: by where the shards' vectors are
            local = all(s.has_local_vectors() for s in self.shards)
            exact_below = FILTER_EXACT_BELOW if local else FILTER_EXACT_BELOW_HNSW_VECTORS
        if fraction < exact_below:
            return _merge(self._map(lambda s: _exact(s, queries, want, allowed)), want)

        def one(s: Shard) -> Result:
            local = allowed[s.offset : s.offset + s.count]
            share = np.count_nonzero(local) / max(s.live, 1)  # the filter skips 1 - share of what it visits
            base = max(ef or s.ef_for(kind), want)
            return s.knn(queries, want, max(base, min(int(base / max(share, 1e-9)), s.count)), local)

        return _merge(self._map(one), want)


def _exact(shard: Shard, queries: np.ndarray, want: int, allowed: np.ndarray) -> Result:
    local = np.flatnonzero(allowed[shard.offset : shard.offset + shard.count])
    k = min(want, len(local))
    if k == 0:
        return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
    scores = queries @ shard.vectors(local).T
    if k < len(local):
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        top = np.tile(np.arange(k), (len(queries), 1))
    top_scores = np.take_along_axis(scores, top, 1)
    labels = local[top] + shard.offset
    order = np.lexsort((labels, -top_scores), axis=1)
    return np.take_along_axis(labels, order, 1), np.take_along_axis(top_scores, order, 1).astype(np.float32)
