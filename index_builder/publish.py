"""Write side of the index format (docs/formats.md, "Index"): write a version, move the pointer, prune.

Protocol: :func:`write_version` writes every file of ``versions/<id>/`` and ``manifest.json`` last;
:func:`publish` checks that every file the manifest names is there with the right size and only then
replaces ``CURRENT`` (atomic on both backends); :func:`prune` deletes old versions, never the current
one nor anything newer (an in-progress build). Readers only ever follow ``CURRENT``, so they never see
a half-written version.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from handler.core import __version__
from handler.core.cpus import usable_cpus
from handler.core.duplicates import (
    DUPLICATES_FILE,
    duplicate_settings,
    find_duplicate_groups,
    write_duplicates,
)
from handler.core.errors import ArtifactError
from handler.core.index import (
    EMBEDDINGS_FILE,
    ERRORS_FILE,
    HNSW_FILE,
    ITEMS_FILE,
    KIND,
    MANIFEST,
    POINTER,
    SCHEMA_VERSION,
    read_manifest,
    read_pointer,
    valid_version_id,
    version_prefix,
)
from handler.core.storage import Store, file_digest, open_store

__all__ = ["BUILDER", "list_versions", "new_version_id", "prune", "publish", "write_version"]

BUILDER = f"index_builder {__version__}"
# Manifest keys computed by write_version; manifest_fields may not set them.
_COMPUTED = (
    "schema_version",
    "kind",
    "version",
    "dim",
    "count",
    "space",
    "M",
    "ef_construction",
    "ef",
    "files",
)
_NORM_TOLERANCE = 1e-3


def new_version_id() -> str:
    """A new, lexicographically sortable version id: UTC timestamp (microseconds) + random suffix,
    e.g. ``20261123T120000123456Z-1a2b3c``."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def _as_store(store: Store | str) -> Store:
    return store if isinstance(store, Store) else open_store(store)


def _jsonl(rows: Iterable[Mapping[str, Any]], path: Path, what: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise ValueError(f"{what}[{i}] must be a dict, got {type(row).__name__}")
            try:
                line = json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{what}[{i}] is not JSON-serialisable: {e}") from None
            f.write(line + "\n")


def _check_inputs(vectors: np.ndarray, items: Sequence[Mapping[str, Any]]) -> np.ndarray:
    arr = np.asarray(vectors)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"vectors must have shape [count, dim], got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"vectors must be floating point, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.shape[0] != len(items):
        raise ValueError(f"{arr.shape[0]} vectors but {len(items)} items")
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError("vectors contain NaN or infinity")
    if arr.shape[0]:
        norms = np.linalg.norm(arr, axis=1)
        worst = int(np.argmax(np.abs(norms - 1.0)))
        if abs(norms[worst] - 1.0) > _NORM_TOLERANCE:
            raise ValueError(f"vectors must be L2-normalised: row {worst} has norm {norms[worst]:.6f}")
    seen: dict[Any, int] = {}
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "id" not in item:
            raise ValueError(f"items[{i}] must be a dict with an 'id'")
        item_id = item["id"]
        if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
            raise ValueError(f"items[{i}]['id'] must be a string or an integer, got {item_id!r}")
        if item_id in seen:
            raise ValueError(f"duplicate item id {item_id!r} (items {seen[item_id]} and {i})")
        seen[item_id] = i
    return arr


def write_version(
    store: Store | str,
    version_id: str,
    *,
    vectors: np.ndarray,
    items: Sequence[Mapping[str, Any]],
    manifest_fields: Mapping[str, Any],
    M: int = 16,
    ef_construction: int = 200,
    ef: int = 64,
    errors: Iterable[Mapping[str, Any]] = (),
    threads: int | None = None,
) -> dict[str, Any]:
    """Build and store ``versions/<version_id>/`` (index.hnsw, items.jsonl, embeddings.npy, errors.jsonl,
    then manifest.json last). Returns the manifest. Does not move the pointer: call :func:`publish`.

    ``vectors``: float ``[count, dim]``, L2-normalised (row = label); ``items``: one dict per row, each
    with a unique ``id`` (str or int) - :meth:`SearchIndex.get_item` looks items up by it.
    ``manifest_fields`` must hold ``model_fingerprint`` and may hold ``precision`` (default ``fp32``),
    ``source``, ``stats`` (``errors`` defaults to ``len(errors)``), ``built_at``, ``builder``,
    ``duplicates`` (``{"threshold", "k"}`` of :func:`duplicate_settings`: near-duplicate groups are found
    with the HNSW index and written as ``duplicates.jsonl``, counted in ``stats.duplicate_groups``); the
    computed fields (schema_version, kind, version, dim, count, space, M, ef_construction, ef, files)
    cannot be overridden. ``threads``: hnswlib build threads (default: all cores).
    An empty collection (count 0) is allowed; its SearchIndex returns no hits.
    """
    import hnswlib

    store = _as_store(store)
    prefix = version_prefix(version_id)
    clash = sorted(set(_COMPUTED) & set(manifest_fields))
    if clash:
        raise ValueError(f"manifest_fields may not set computed field(s) {clash}")
    fingerprint = manifest_fields.get("model_fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ValueError("manifest_fields must hold a non-empty 'model_fingerprint'")
    for name, value, low in (("M", M, 2), ("ef_construction", ef_construction, 1), ("ef", ef, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    dup = manifest_fields.get("duplicates")
    if dup is not None:
        if not isinstance(dup, Mapping) or set(dup) != {"threshold", "k"}:
            raise ValueError(
                f"manifest_fields['duplicates'] must be {{'threshold', 'k'}} or None, got {dup!r}"
            )
        duplicate_settings(dup["threshold"], dup["k"])
    items = list(items)
    arr = _check_inputs(vectors, items)
    errors = list(errors)
    count, dim = arr.shape
    pointer = read_pointer(store)
    if pointer is not None and pointer["version"] == version_id:
        raise ValueError(f"version {version_id!r} is the current version of {store.uri}; use a new id")
    if store.exists(prefix + MANIFEST):
        raise ValueError(f"version {version_id!r} already exists in {store.uri}; use a new id")

    with tempfile.TemporaryDirectory(prefix="index-build-") as tmp:
        work = Path(tmp)
        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(max_elements=count, M=M, ef_construction=ef_construction, random_seed=100)
        if count:
            index.add_items(arr, np.arange(count), num_threads=threads or usable_cpus())
        names, duplicate_groups = [HNSW_FILE, ITEMS_FILE, EMBEDDINGS_FILE, ERRORS_FILE], 0
        if dup is not None:  # from the graph just built: each item's k nearest, not every pair
            groups = find_duplicate_groups(arr, dup["threshold"], dup["k"], index=index, threads=threads)
            duplicate_groups = write_duplicates(work / DUPLICATES_FILE, groups, [it["id"] for it in items])
            names.append(DUPLICATES_FILE)
        index.set_ef(ef)
        index.save_index(str(work / HNSW_FILE))
        del index
        _jsonl(items, work / ITEMS_FILE, "items")
        np.save(work / EMBEDDINGS_FILE, arr, allow_pickle=False)
        _jsonl(errors, work / ERRORS_FILE, "errors")

        files: dict[str, dict[str, Any]] = {}
        for name in names:
            digest, size = file_digest(work / name)
            files[name] = {"sha256": digest, "size": size}
            store.upload_file(prefix + name, work / name)

    stats = dict(manifest_fields.get("stats") or {})
    stats.setdefault("errors", len(errors))
    if dup is not None:
        stats["duplicate_groups"] = duplicate_groups
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "version": version_id,
        "model_fingerprint": fingerprint,
        "precision": "fp32",
        "dim": int(dim),
        "count": int(count),
        "space": "ip",
        "M": M,
        "ef_construction": ef_construction,
        "ef": ef,
        "files": files,
        "built_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "builder": BUILDER,
        "source": None,
    }
    manifest.update({k: v for k, v in manifest_fields.items() if k != "stats"})
    manifest["stats"] = stats
    data = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    store.write_bytes(prefix + MANIFEST, data)
    return manifest


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
    present = {o.key[len(prefix) :]: o.size for o in store.list(prefix)}
    for name, entry in stored["files"].items():
        if name not in present:
            raise ArtifactError(
                f"cannot publish {version_id}: file {name} is missing ({store.uri_for(prefix + name)})"
            )
        if present[name] != entry["size"]:
            raise ArtifactError(
                f"cannot publish {version_id}: file {name} has size {present[name]}, manifest says "
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


def prune(store: Store | str, keep: int) -> list[str]:
    """Delete old versions, keeping the ``keep`` newest complete versions up to and including the current
    one. Never deletes the current version or any version sorting after it (an in-progress build, or the
    newer versions after a rollback); incomplete versions older than the current one are deleted.
    Does nothing without a pointer. Returns the deleted version ids, oldest first. ``keep >= 2`` leaves
    the previous version for readers that read the pointer just before it moved."""
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
    return doomed
