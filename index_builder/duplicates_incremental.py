"""The near-duplicate groups of a version being written (write_version's ``duplicates``): updated from the
current version's ``duplicates.jsonl`` when it was found with the same settings and the current shards are
reused (:func:`handler.core.duplicate_update.update_duplicate_groups`: work grows with the change), else
computed over the whole collection (:func:`handler.core.duplicates.find_duplicate_groups`)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from handler.core.duplicate_update import update_duplicate_groups
from handler.core.duplicates import DUPLICATES_FILE, DuplicateGroup, find_duplicate_groups, parse_duplicates
from handler.core.errors import SearchError
from handler.core.index_format import read_manifest, read_pointer, version_prefix
from handler.core.storage import Store
from index_builder.shard_plan import PrevShard

__all__ = ["previous_groups", "unchanged_rows", "version_duplicate_groups"]

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


def unchanged_rows(prev: Sequence[PrevShard], lines: Sequence[str], vectors: np.ndarray) -> np.ndarray | None:
    """Per new row: whether the current version holds it live with the same items line and vector (None
    when a shard's embeddings are unknown)."""
    where = {line: i for i, line in enumerate(lines)}
    same = np.zeros(len(lines), dtype=bool)
    for shard in prev:
        if shard.embeddings is None or len(shard.lines) != shard.spec.count:
            return None
        dead = set(shard.spec.deleted)
        pairs = [(label, where.get(line)) for label, line in enumerate(shard.lines) if label not in dead]
        found = np.asarray([(lab, i) for lab, i in pairs if i is not None], dtype=np.int64).reshape(-1, 2)
        for s in range(0, len(found), _CHUNK):
            part = found[s : s + _CHUNK]
            old = np.asarray(shard.embeddings[part[:, 0]], dtype=np.float32)
            same[part[np.all(old == vectors[part[:, 1]], axis=1), 1]] = True
    return same


def version_duplicate_groups(
    store: Store,
    prev: Sequence[PrevShard] | None,
    settings: Mapping[str, Any],
    vectors: np.ndarray,
    lines: Sequence[str],
    ids: Sequence[Any],
    threads: int | None,
) -> list[DuplicateGroup]:
    """The groups of the new version (rows = ``vectors``' rows): incremental when ``prev`` (the current
    version's shards, reused) and its groups with the same ``settings`` are known, else in full."""
    groups = previous_groups(store, settings) if prev else None
    unchanged = unchanged_rows(prev, lines, vectors) if prev and groups is not None else None
    if groups is None or unchanged is None:
        return find_duplicate_groups(vectors, settings["threshold"], settings["k"], threads=threads)
    return update_duplicate_groups(vectors, ids, groups, unchanged, float(settings["threshold"]))
