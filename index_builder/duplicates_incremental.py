"""The near-duplicate groups of a version being written (write_version's ``duplicates``): updated from the
current version's ``duplicates.jsonl`` when it was found with the same settings and the current shards are
reused (:func:`handler.core.duplicate_update.update_duplicate_groups`: work grows with the change; the
added and changed rows are searched in the current version's HNSW shards), else computed over the whole
collection (:func:`handler.core.duplicates.find_duplicate_groups`)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from handler.core.cpus import usable_cpus
from handler.core.duplicate_update import Neighbours, changed_neighbours, update_duplicate_groups
from handler.core.duplicates import (
    DUPLICATES_FILE,
    DuplicateGroup,
    find_duplicate_groups,
    linked_neighbours,
    parse_duplicates,
)
from handler.core.errors import SearchError
from handler.core.index_format import ShardSpec, read_manifest, read_pointer, version_prefix
from handler.core.storage import Store
from index_builder.shard_plan import PrevShard
from index_builder.shard_write import previous_hnsw

__all__ = ["previous_groups", "previous_rows", "shard_neighbours", "version_duplicate_groups"]

_CHUNK = 65_536


def previous_groups(store: Store, settings: Mapping[str, Any]) -> list[list[Any]] | None:
    """The current version's groups (item ids), or None when it has none found with ``settings``
    (``{"threshold", "k"}``) or its file does not match its manifest."""
    try:
        pointer = read_pointer(store)
        if pointer is None:
            return None
        manifest = read_manifest(store, pointer["version"], pointer["manifest_sha256"])
        entry = (manifest.get("files") or {}).get(DUPLICATES_FILE)
        if manifest.get("duplicates") != dict(settings) or not isinstance(entry, Mapping):
            return None
        key = version_prefix(pointer["version"]) + DUPLICATES_FILE
        raw = store.read_bytes(key)
        if hashlib.sha256(raw).hexdigest() != entry.get("sha256"):
            return None
        return [list(g["items"]) for g in parse_duplicates(raw.decode("utf-8"), store.uri_for(key))]
    except (SearchError, OSError, UnicodeDecodeError):
        return None


def previous_rows(
    prev: Sequence[PrevShard], lines: Sequence[str], vectors: np.ndarray
) -> list[np.ndarray] | None:
    """Per shard of the current version, per local label: the new row holding that live label's items
    line and vector, or -1 (tombstoned, removed or changed). None when a shard's embeddings are unknown."""
    where = {line: i for i, line in enumerate(lines)}
    out = []
    for shard in prev:
        if shard.embeddings is None or len(shard.lines) != shard.spec.count:
            return None
        dead = set(shard.spec.deleted)
        local = np.asarray(
            [-1 if label in dead else where.get(line, -1) for label, line in enumerate(shard.lines)],
            dtype=np.int64,
        )
        labels = np.flatnonzero(local >= 0)
        for s in range(0, len(labels), _CHUNK):
            part = labels[s : s + _CHUNK]
            same = np.all(
                np.asarray(shard.embeddings[part], dtype=np.float32) == vectors[local[part]], axis=1
            )
            local[part[~same]] = -1
        out.append(local)
    return out


def _shard_index(store: Store, spec: ShardSpec, dim: int, work: Path, fetched: Path | None) -> Any:
    """A current shard's HNSW index: the store's file (local), ``fetched``'s copy, or downloaded to
    ``work`` (where extending a tail shard may have put it already); checked against its sha256."""
    import hnswlib

    path = previous_hnsw(store, spec, work, fetched)
    index = hnswlib.Index(space="ip", dim=dim)
    index.load_index(str(path))
    return index


def shard_neighbours(
    store: Store,
    prev: Sequence[PrevShard],
    local_rows: Sequence[np.ndarray],
    k: int,
    threads: int,
    work: Path,
    fetched: Path | None = None,
) -> Neighbours:
    """The links of the changed rows: among themselves exactly (``changed**2`` dot products), to the
    unchanged rows through the current version's HNSW shards (which hold every unchanged row; labels
    mapped by ``local_rows``, those of removed or changed items skipped)."""

    def neighbours(vectors: np.ndarray, rows: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(vectors[rows])
        a, b = changed_neighbours(queries, np.arange(len(rows)), threshold)
        a_parts, b_parts = [rows[a]], [rows[b]]
        for shard, local in zip(prev, local_rows, strict=True):
            if not len(rows) or not (local >= 0).any():
                continue
            index = _shard_index(store, shard.spec, vectors.shape[1], work, fetched)
            q, labels, _ = linked_neighbours(index, queries, threshold, k, threads)
            del index
            other = local[labels]
            a_parts.append(rows[q[other >= 0]])
            b_parts.append(other[other >= 0])
        return np.concatenate(a_parts), np.concatenate(b_parts)

    return neighbours


def version_duplicate_groups(
    store: Store,
    prev: Sequence[PrevShard] | None,
    settings: Mapping[str, Any],
    vectors: np.ndarray,
    lines: Sequence[str],
    ids: Sequence[Any],
    *,
    threads: int | None,
    work: Path,
    fetched: Path | None = None,
) -> list[DuplicateGroup]:
    """The groups of the new version (rows = ``vectors``' rows): incremental when ``prev`` (the current
    version's shards, reused) and its groups with the same ``settings`` are known, else in full.
    ``work``: a scratch folder; ``fetched``: where the current version's files were fetched to, if so."""
    groups = previous_groups(store, settings) if prev else None
    local = previous_rows(prev, lines, vectors) if prev and groups is not None else None
    if prev is None or groups is None or local is None:
        return find_duplicate_groups(vectors, settings["threshold"], settings["k"], threads=threads)
    unchanged = np.zeros(len(vectors), dtype=bool)
    for rows in local:
        unchanged[rows[rows >= 0]] = True
    search = shard_neighbours(store, prev, local, settings["k"], threads or usable_cpus(), work, fetched)
    return update_duplicate_groups(vectors, ids, groups, unchanged, float(settings["threshold"]), search)
