"""DEST's other versions during a build: the previous one (its rows and vectors, reused for unchanged files;
the check that a rebuild changed nothing; how its image options compare), an interrupted build's unpublished
one, and pruning."""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handler.core.errors import ArtifactError, SearchError
from handler.core.index_format import (
    EMBEDDINGS_FILE,
    read_manifest,
    read_pointer,
    shard_specs,
    version_prefix,
)
from handler.core.storage import LocalStore, Store, fetch_dir, file_digest
from index_builder.errors import BuildError
from index_builder.facts import previous_content, row_facts
from index_builder.options import BuildOptions, _Log
from index_builder.publish import prune
from index_builder.shard_write import version_items
from index_builder.source_base import SourceItem
from index_builder.version_settings import error_rows, jsonable, same_settings
from index_builder.workdir import PREVIOUS, CachedVector, WorkDir


class ShardRows:
    """The previous version's vectors, shard by shard (memory-mapped, never concatenated into one copy of
    the whole collection): ``rows[label]`` for a label (or an array of labels) of the version."""

    def __init__(self, parts: list[np.ndarray], dim: int) -> None:
        self.parts, self.dim = parts, dim
        self.starts = [0]
        for part in parts:
            self.starts.append(self.starts[-1] + len(part))

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, label: Any) -> np.ndarray:
        if np.ndim(label) == 0:
            if not 0 <= label < len(self):
                raise IndexError(f"label {label} out of range")
            s = bisect.bisect_right(self.starts, int(label)) - 1
            return self.parts[s][int(label) - self.starts[s]]
        labels = np.asarray(label, dtype=np.int64)
        out = np.empty((len(labels), self.dim), dtype=np.float32)
        which = np.searchsorted(self.starts, labels, side="right") - 1
        for s in np.unique(which):
            mask = which == s
            out[mask] = self.parts[s][labels[mask] - self.starts[s]]
        return out


@dataclass
class _Previous:
    version: str
    manifest: dict[str, Any]
    rows: dict[Any, int] = field(default_factory=dict)  # id -> label
    items: list[dict[str, Any]] = field(default_factory=list)
    embeddings: ShardRows | None = None
    by_sha: dict[str, int] = field(default_factory=dict)  # content sha256 -> label

    def cached(self, sha: str) -> CachedVector | None:
        label = self.by_sha.get(sha)
        if label is None or self.embeddings is None:
            return None
        row = self.items[label]
        return CachedVector(
            np.asarray(self.embeddings[label], dtype=np.float32), row.get("width"), row.get("height")
        )


def _load_previous_vectors(store: Store, prev: _Previous, work_root: Path, log: _Log) -> bool:
    """Fill prev.items / embeddings (checksums verified; labels as in the version, tombstoned rows kept but
    left out of prev.rows / by_sha); False (with a warning) when they cannot be used."""
    specs = shard_specs(prev.manifest)
    if any("embeddings" not in spec.files for spec in specs):
        log.warn(f"previous version {prev.version} has no {EMBEDDINGS_FILE}; every image is embedded again")
        return False
    wanted = {e["key"]: e for spec in specs for p, e in spec.files.items() if p in ("items", "embeddings")}
    dim = prev.manifest["dim"]
    try:
        if isinstance(store, LocalStore):
            root = store.root
            for key, entry in wanted.items():
                digest, size = file_digest(root / key)
                if digest != entry["sha256"] or size != entry["size"]:
                    raise ArtifactError(f"{store.uri_for(key)}: checksum does not match the manifest")
        else:
            root = fetch_dir(store, work_root / PREVIOUS, list(wanted), expected=wanted)
        items: list[dict[str, Any]] = []
        parts: list[np.ndarray] = []
        dead: set[int] = set()
        for spec in specs:
            path = root / spec.files["items"]["key"]
            rows = [
                json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
            ]
            emb = np.load(root / spec.files["embeddings"]["key"], mmap_mode="r", allow_pickle=False)
            if emb.ndim != 2 or emb.shape != (len(rows), dim) or len(rows) != spec.count:
                raise ArtifactError(f"{EMBEDDINGS_FILE} has shape {emb.shape}, expected ({len(rows)}, {dim})")
            dead |= {len(items) + d for d in spec.deleted}
            items += rows
            parts.append(emb)
        embeddings = ShardRows(parts, dim)
    except (OSError, ValueError, ArtifactError) as e:
        log.warn(
            f"cannot reuse the vectors of previous version {prev.version} ({e}); every image is embedded "
            "again"
        )
        return False
    prev.items = items
    prev.embeddings = embeddings
    for label, row in enumerate(items):
        if isinstance(row, dict) and "id" in row and label not in dead:
            prev.rows[row["id"]] = label
            if isinstance(row.get("sha256"), str):
                prev.by_sha.setdefault(row["sha256"], label)
    return True


def _unchanged_row(item: SourceItem, row: dict[str, Any]) -> bool:
    """Same file as the previous version's row, judged without reading it (size + mtime (+ etag)). A row
    of an older builder without the image facts (index_builder.facts) is not: the file is read once more
    to fill them (its vector is still reused, by content hash)."""
    if item.size is None or item.mtime is None or not isinstance(row.get("sha256"), str):
        return False
    if previous_content(row) is None:
        return False
    if row.get("uri") != item.uri or row.get("size") != item.size or row.get("mtime") != item.mtime:
        return False
    return item.etag is None or row.get("etag") == item.etag


def _item_row(
    item: SourceItem,
    sha: str,
    size: int | None,
    width: int | None,
    height: int | None,
    content: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An items.jsonl row; ``content``: the image's content facts (index_builder.facts.content_facts)."""
    row: dict[str, Any] = {
        "id": item.id,
        "uri": item.uri,
        "size": size if size is not None else item.size,
        "mtime": item.mtime,
        "sha256": sha,
        "width": width,
        "height": height,
    }
    if item.etag is not None:
        row["etag"] = item.etag
    row.update(row_facts(item.id, item.uri, item.mtime, content))
    row["metadata"] = item.metadata
    return row


def _same_as_previous(
    store: Store,
    prev: _Previous,
    rows: list[dict[str, Any]],
    vectors: np.ndarray,
    errors: list[dict[str, Any]],
    fields: dict[str, Any],
    opts: BuildOptions,
    log: _Log,
) -> bool:
    """Whether publishing would give the current version again: the same rows, vectors and errors, and the
    same manifest settings (model, precision, HNSW M / ef_construction / ef, source, and any other
    non-volatile field). Any doubt (e.g. errors.jsonl unreadable) means "changed"."""
    settings = {
        "M": opts.M,
        "ef_construction": opts.ef_construction,
        "ef": opts.ef,
        "target_recall": opts.target_recall,
        "dim": int(vectors.shape[1]),
        "count": len(rows),
        "space": "ip",
        **fields,
    }
    if not same_settings(prev.manifest, settings):
        return False
    labels = [prev.rows[row["id"]] for row in rows if row["id"] in prev.rows]
    if prev.embeddings is None or len(prev.rows) != len(rows) or len(labels) != len(rows):
        return False
    if [prev.items[label] for label in labels] != jsonable(rows):
        return False
    if not np.array_equal(np.asarray(prev.embeddings[np.asarray(labels, dtype=np.int64)]), vectors):
        return False
    try:
        old_errors = error_rows(store, prev.version, prev.manifest)
    except (SearchError, OSError, ValueError) as e:
        log.warn(f"cannot compare with the errors of version {prev.version} ({e}); publishing a new version")
        return False
    return old_errors is not None and old_errors == jsonable(errors)


def _previous_ids(store: Store, prev: _Previous | None, log: _Log) -> list[Any]:
    """Ids of the previous version when its vectors were not loaded (for the removed/added counts)."""
    if prev is None:
        return []
    try:
        rows, dead = version_items(store, prev.manifest)
        return [row["id"] for label, row in enumerate(rows) if label not in dead]
    except (SearchError, OSError, ValueError, KeyError, TypeError) as e:
        log.warn(
            f"cannot read the ids of previous version {prev.version} ({e}); added/removed counts are "
            "approximate"
        )
        return []


def _cleanup_pending(store: Store, work: WorkDir, current: str | None, log: _Log) -> None:
    """Delete the version a previous build of this work dir wrote but never published."""
    pending = work.read_pending()
    if not pending or pending.get("dest") != store.uri:
        work.clear_pending()
        return
    version = pending.get("version")
    if isinstance(version, str) and version != current and (current is None or version > current):
        try:
            n = store.delete_prefix(version_prefix(version))
            if n:
                log.info(f"removed {n} file(s) of unpublished version {version} left by an interrupted build")
        except (SearchError, ValueError) as e:
            log.warn(f"cannot remove unpublished version {version} ({e}); it is harmless and pruned later")
            return
    work.clear_pending()


def _prune(dest: Store, keep: int, version: str, log: _Log) -> list[str]:
    """Prune old versions and (local DEST) temp files of killed writers; a failure is only a warning."""
    try:
        pruned = prune(dest, keep)
        if isinstance(dest, LocalStore):
            dest.remove_stale_temp()
        return pruned
    except (SearchError, OSError, ValueError) as e:
        log.warn(
            f"version {version} is published, but pruning old versions failed ({e}); the next build retries"
        )
        return []


def _read_current(dest: Store, opts: BuildOptions, fingerprint: str, log: _Log) -> _Previous | None:
    """DEST's current version (None: there is none, or it is unreadable and ``--full`` ignores it);
    :class:`BuildError` when it is another model's and not ``--full``."""
    prev: _Previous | None = None
    try:
        pointer = read_pointer(dest)
        if pointer is not None:
            prev = _Previous(
                pointer["version"], read_manifest(dest, pointer["version"], pointer["manifest_sha256"])
            )
    except SearchError as e:
        if not opts.full:
            raise BuildError(
                f"--out {dest.uri}: the current index cannot be read ({e.message}); "
                "pass --full to build a new version from scratch"
            ) from None
        log.warn(f"ignoring the unreadable current index of {dest.uri} ({e.message})")
        return None
    if prev and prev.manifest["model_fingerprint"] != fingerprint and not opts.full:
        raise BuildError(
            f"--out {dest.uri} holds version {prev.version} built with model "
            f"{prev.manifest['model_fingerprint']}, "
            f"but --bundle {opts.bundle} is model {fingerprint}: vectors of different models cannot be "
            "mixed. "
            "Pass --full to rebuild the whole index with this bundle, or use the bundle the index was "
            "built with."
        )
    return prev
