"""Write side of the index format (docs/formats.md, "Index"): write a version, move the pointer, prune.

Protocol: :func:`write_version` writes every file of ``versions/<id>/`` and ``manifest.json`` last;
:func:`publish` checks that every file the manifest names is there with the right size and only then
replaces ``CURRENT`` (atomic on both backends); :func:`prune` deletes old versions, never the current
one nor anything newer (an in-progress build). Readers only ever follow ``CURRENT``, so they never see
a half-written version. :func:`write_version` lives in :mod:`index_builder.version_write` (re-exported).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from handler.core.errors import ArtifactError, SearchError
from handler.core.index_format import (
    MANIFEST,
    POINTER,
    SHARDS_PREFIX,
    read_manifest,
    read_pointer,
    shard_specs,
    valid_version_id,
    version_prefix,
)
from handler.core.storage import Store
from index_builder.version_write import _as_store

__all__ = ["SHARD_GRACE_S", "list_versions", "prune", "publish"]

#: unreferenced shard files younger than this are kept by prune (a concurrent build may be uploading them)
SHARD_GRACE_S = 3600.0


def publish(store: Store | str, version_id: str, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Point ``CURRENT`` at ``version_id`` - only after checking that its manifest is valid (and equal to
    ``manifest`` when given) and that every file it names exists with the right size; otherwise
    :class:`ArtifactError` naming the file, and the pointer is left alone. Returns the new pointer."""
    store = _as_store(store)
    prefix = version_prefix(version_id)
    try:
        raw = store.read_bytes(prefix + MANIFEST)
    except FileNotFoundError:
        raise ArtifactError(
            f"cannot publish {version_id}: {store.uri_for(prefix + MANIFEST)} is missing (incomplete version)"
        ) from None
    sha = hashlib.sha256(raw).hexdigest()
    stored = read_manifest(store, version_id, sha)
    if manifest is not None and json.loads(json.dumps(manifest)) != stored:
        raise ArtifactError(f"cannot publish {version_id}: the stored manifest differs from the one given")
    present = {o.key: o.size for o in store.list(prefix)}
    wanted = {prefix + name: entry for name, entry in stored["files"].items()}
    if stored["schema_version"] >= 2:
        present.update({o.key: o.size for o in store.list(SHARDS_PREFIX)})
        wanted.update({e["key"]: e for spec in shard_specs(stored) for e in spec.files.values()})
    for key, entry in wanted.items():
        name = key[len(prefix) :] if key.startswith(prefix) else key
        if key not in present:
            raise ArtifactError(f"cannot publish {version_id}: file {name} is missing ({store.uri_for(key)})")
        if present[key] != entry["size"]:
            raise ArtifactError(
                f"cannot publish {version_id}: file {name} has size {present[key]}, manifest says "
                f"{entry['size']}"
            )
    pointer = {"version": version_id, "manifest_sha256": sha}
    store.write_bytes(POINTER, (json.dumps(pointer, sort_keys=True) + "\n").encode("utf-8"))
    return pointer


def list_versions(store: Store | str) -> dict[str, bool]:
    """``{version id: complete}`` for every version directory in the store (complete = has a manifest)."""
    store = _as_store(store)
    versions: dict[str, bool] = {}
    for obj in store.list("versions/"):
        parts = obj.key.split("/")
        if len(parts) < 3:
            continue
        versions.setdefault(parts[1], False)
        if parts[2:] == [MANIFEST]:
            versions[parts[1]] = True
    return versions


def prune(store: Store | str, keep: int, *, shard_grace_s: float = SHARD_GRACE_S) -> list[str]:
    """Delete old versions, keeping the ``keep`` newest complete versions up to and including the current
    one. Never deletes the current version or any version sorting after it (an in-progress build, or the
    newer versions after a rollback); incomplete versions older than the current one are deleted.
    Does nothing without a pointer. Returns the deleted version ids, oldest first. ``keep >= 2`` leaves
    the previous version for readers that read the pointer just before it moved.

    Then shard files (``shards/``) that no remaining version references are deleted once older than
    ``shard_grace_s`` (a build in progress uploads its shards before its manifest exists); when a
    remaining manifest cannot be read, no shard file is deleted."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
    store = _as_store(store)
    pointer = read_pointer(store)
    if pointer is None:
        return []
    current = pointer["version"]
    versions = list_versions(store)
    older = sorted(v for v in versions if v < current)
    complete_older = [v for v in older if versions[v]]
    retained = set(complete_older[-(keep - 1) :]) if keep > 1 else set()
    doomed = [v for v in older if v not in retained and valid_version_id(v)]
    for version in doomed:
        prefix = version_prefix(version)
        store.delete(prefix + MANIFEST)  # first, so a half-deleted version reads as incomplete
        store.delete_prefix(prefix)
    _prune_shards(store, shard_grace_s)
    return doomed


def _prune_shards(store: Store, grace_s: float) -> None:
    referenced: set[str] = set()
    for version, complete in list_versions(store).items():
        if not complete or not valid_version_id(version):
            continue  # incomplete: deleted above, or newer (in progress: protected by the grace period)
        try:
            manifest = read_manifest(store, version)
        except SearchError:
            return  # unsure what it references: keep everything
        referenced |= {e["key"] for spec in shard_specs(manifest) for e in spec.files.values()}
    cutoff = time.time() - grace_s
    for obj in list(store.list(SHARDS_PREFIX)):
        if obj.key not in referenced and obj.mtime < cutoff:
            store.delete(obj.key)
