"""The index format's pointer and manifest (docs/formats.md, "Index"): names, version ids, reading and
validating ``CURRENT`` and ``versions/<id>/manifest.json``, and the version's shard list (schema 2; a
schema-1 version reads as one shard). The writer is index_builder.publish."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import tempfile
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

from handler.core.errors import ArtifactError
from handler.core.images import ImageOptions
from handler.core.storage import Store, open_store

__all__ = [
    "DEFAULT_CACHE_DIR",
    "EMBEDDINGS_FILE",
    "ERRORS_FILE",
    "HNSW_FILE",
    "INDEX_FILES",
    "ITEMS_FILE",
    "KIND",
    "MANIFEST",
    "POINTER",
    "QUERY_KINDS",
    "REQUIRED_FILES",
    "SCHEMA_VERSION",
    "SHARDS_PREFIX",
    "SHARD_PARTS",
    "SUPPORTED_SCHEMAS",
    "ShardSpec",
    "check_for_update",
    "read_manifest",
    "read_pointer",
    "shard_key",
    "shard_specs",
    "valid_version_id",
    "version_prefix",
]

SCHEMA_VERSION = 2  # what the builder writes
SUPPORTED_SCHEMAS = (1, 2)  # what readers accept
KIND = "clip-hnsw-index"
POINTER = "CURRENT"
MANIFEST = "manifest.json"
HNSW_FILE = "index.hnsw"
ITEMS_FILE = "items.jsonl"
EMBEDDINGS_FILE = "embeddings.npy"
ERRORS_FILE = "errors.jsonl"
INDEX_FILES = (HNSW_FILE, ITEMS_FILE, EMBEDDINGS_FILE, ERRORS_FILE)
REQUIRED_FILES = (HNSW_FILE, ITEMS_FILE)
DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "clip-index-cache"
SHARDS_PREFIX = "shards/"  # schema 2: content-addressed shard files, shared by the versions that use them
SHARD_PARTS = {"hnsw": ".hnsw", "items": ".jsonl", "embeddings": ".npy"}  # part -> file extension
_REQUIRED_PARTS = ("hnsw", "items")
#: what a shard's ``ef_by_query`` calibrates: image (and "more like this") queries, text (and raw vector)
#: queries. CLIP text embeddings sit far from every image (the modality gap) and need a wider search.
QUERY_KINDS = ("image", "text")

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")


def valid_version_id(version: Any) -> bool:
    """Version ids are single path segments: letters, digits, ``._-``, not starting with a dot."""
    return isinstance(version, str) and bool(_VERSION_RE.match(version))


def version_prefix(version: str) -> str:
    """``versions/<id>/``: where a version's files live inside the index store."""
    if not valid_version_id(version):
        raise ValueError(f"invalid index version id {version!r}")
    return f"versions/{version}/"


def _as_store(store: Store | str | os.PathLike[str]) -> Store:
    return store if isinstance(store, Store) else open_store(store)


def read_pointer(store: Store | str) -> dict[str, Any] | None:
    """The ``CURRENT`` pointer ``{"version", "manifest_sha256"}``, or None when there is none yet.
    A pointer that exists but is malformed raises :class:`ArtifactError`."""
    store = _as_store(store)
    try:
        raw = store.read_bytes(POINTER)
    except FileNotFoundError:
        return None
    where = store.uri_for(POINTER)
    try:
        pointer = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise ArtifactError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(pointer, dict):
        raise ArtifactError(f"{where}: expected a JSON object")
    if not valid_version_id(pointer.get("version")):
        raise ArtifactError(f"{where}: invalid or missing 'version': {pointer.get('version')!r}")
    sha = pointer.get("manifest_sha256")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ArtifactError(f"{where}: invalid or missing 'manifest_sha256': {sha!r}")
    return pointer


def check_for_update(store: Store | str, current_version: str | None) -> str | None:
    """The version the pointer names if it differs from ``current_version``, else None.
    Cheap: reads only the pointer."""
    pointer = read_pointer(store)
    if pointer is None or pointer["version"] == current_version:
        return None
    return str(pointer["version"])


def read_manifest(store: Store | str, version: str, manifest_sha256: str | None = None) -> dict[str, Any]:
    """Read and validate ``versions/<version>/manifest.json`` (schema, kind, fields; sha256 if given)."""
    store = _as_store(store)
    key = version_prefix(version) + MANIFEST
    where = store.uri_for(key)
    try:
        raw = store.read_bytes(key)
    except FileNotFoundError:
        raise ArtifactError(f"{where}: manifest missing (index version {version!r} incomplete?)") from None
    if manifest_sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != manifest_sha256:
            raise ArtifactError(
                f"{where}: sha256 {digest} does not match the CURRENT pointer's {manifest_sha256}"
            )
    try:
        manifest: dict[str, Any] = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise ArtifactError(f"{where}: not valid JSON ({e})") from None
    _validate_manifest(manifest, version, where)
    return manifest


def _validate_manifest(manifest: Any, version: str, where: str) -> None:
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{where}: expected a JSON object")
    schema = manifest.get("schema_version")
    if isinstance(schema, bool) or schema not in SUPPORTED_SCHEMAS:
        raise ArtifactError(
            f"{where}: unsupported schema_version {schema!r} (expected one of {list(SUPPORTED_SCHEMAS)})"
        )
    if manifest.get("kind") != KIND:
        raise ArtifactError(f"{where}: kind is {manifest.get('kind')!r}, expected {KIND!r}")
    if manifest.get("version") != version:
        raise ArtifactError(f"{where}: names version {manifest.get('version')!r}, expected {version!r}")
    if manifest.get("space") != "ip":
        raise ArtifactError(f"{where}: space is {manifest.get('space')!r}, expected 'ip'")
    for field in ("dim", "count", "ef"):
        value = manifest.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if field != "count" else 0):
            raise ArtifactError(f"{where}: invalid {field!r}: {value!r}")
    if not isinstance(manifest.get("model_fingerprint"), str) or not manifest["model_fingerprint"]:
        raise ArtifactError(f"{where}: missing 'model_fingerprint'")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"{where}: missing 'files'")
    for name, entry in files.items():
        if (
            not isinstance(name, str)
            or "/" in name
            or name in ("", ".", "..", MANIFEST)
            or not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not isinstance(entry.get("size"), int)
        ):
            raise ArtifactError(f"{where}: invalid files entry {name!r}: {entry!r}")
    if schema == 1:
        for name in REQUIRED_FILES:
            if name not in files:
                raise ArtifactError(f"{where}: 'files' lacks {name!r}")
    else:
        _check_by_query(manifest, where)
        _validate_shards(manifest, where)
    try:
        ImageOptions.from_manifest(manifest.get("image_preprocess"))
    except ArtifactError as e:
        raise ArtifactError(f"{where}: {e.message}") from None


@dataclass(frozen=True)
class ShardSpec:
    """One shard of a version as the manifest describes it. ``count``: rows of its files (deleted ones
    included); ``deleted``: local labels deleted since the shard was built (tombstones); ``ef``: its
    default query ef (the largest of ``ef_by_query``); ``recall``: recall@10 measured (None: not measured);
    ``files``: part (``hnsw``, ``items``, ``embeddings``) -> ``{"key", "sha256", "size"}`` (key relative to
    the store); ``ef_by_query`` / ``recall_by_query``: per query kind (:data:`QUERY_KINDS`), the ef
    calibrated for it and the recall measured there (empty: older shards, ``ef`` for every kind)."""

    count: int
    deleted: tuple[int, ...]
    ef: int
    recall: float | None
    files: dict[str, dict[str, Any]]
    ef_by_query: dict[str, int] = dataclass_field(default_factory=dict)
    recall_by_query: dict[str, float] = dataclass_field(default_factory=dict)

    @property
    def live(self) -> int:
        return self.count - len(self.deleted)


def shard_key(part: str, sha256: str) -> str:
    """``shards/<sha256><ext>``: where a schema-2 shard file lives (named by its content)."""
    return f"{SHARDS_PREFIX}{sha256}{SHARD_PARTS[part]}"


def shard_specs(manifest: dict[str, Any]) -> list[ShardSpec]:
    """The shards of a validated manifest, in label order (a schema-1 version is one shard)."""
    if manifest["schema_version"] == 1:
        prefix = version_prefix(manifest["version"])
        names = {"hnsw": HNSW_FILE, "items": ITEMS_FILE, "embeddings": EMBEDDINGS_FILE}
        parts = {
            p: {"key": prefix + n, **manifest["files"][n]} for p, n in names.items() if n in manifest["files"]
        }
        return [ShardSpec(int(manifest["count"]), (), int(manifest["ef"]), None, parts)]
    return [
        ShardSpec(
            int(s["count"]),
            tuple(s.get("deleted") or ()),
            int(s["ef"]),
            s.get("recall"),
            {p: {"key": shard_key(p, e["sha256"]), **e} for p, e in s["files"].items()},
            dict(s.get("ef_by_query") or {}),
            dict(s.get("recall_by_query") or {}),
        )
        for s in manifest["shards"]
    ]


def _int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_by_query(entry: dict[str, Any], where: str) -> None:
    """``ef_by_query`` (kind -> ef >= 1) and ``recall_by_query`` (kind -> 0..1), where present."""
    for name, ok in (
        ("ef_by_query", lambda v: _int(v, 1)),
        (
            "recall_by_query",
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1,
        ),
    ):
        per = entry.get(name)
        if per is not None and (
            not isinstance(per, dict)
            or any(kind not in QUERY_KINDS for kind in per)
            or not all(map(ok, per.values()))
        ):
            raise ArtifactError(
                f"{where}: {name!r} must map {list(QUERY_KINDS)} to numbers, got {per!r:.200}"
            )


def _validate_shards(manifest: dict[str, Any], where: str) -> None:
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        raise ArtifactError(f"{where}: missing 'shards'")
    live = 0
    for i, shard in enumerate(shards):
        bad = f"{where}: invalid shard {i}"
        if not isinstance(shard, dict) or not _int(shard.get("count"), 0) or not _int(shard.get("ef"), 1):
            raise ArtifactError(f"{bad}: {shard!r:.200}")
        _check_by_query(shard, bad)
        deleted = shard.get("deleted") or []
        if (
            not isinstance(deleted, list)
            or not all(_int(d, 0) and d < shard["count"] for d in deleted)
            or any(a >= b for a, b in itertools.pairwise(deleted))
        ):
            raise ArtifactError(f"{bad}: 'deleted' must be sorted unique labels below its count")
        files = shard.get("files")
        if not isinstance(files, dict) or any(p not in files for p in _REQUIRED_PARTS):
            raise ArtifactError(f"{bad}: 'files' must hold {list(_REQUIRED_PARTS)}")
        for part, entry in files.items():
            if (
                part not in SHARD_PARTS
                or not isinstance(entry, dict)
                or not isinstance(entry.get("sha256"), str)
                or not _SHA_RE.match(entry["sha256"])
                or not _int(entry.get("size"), 0)
            ):
                raise ArtifactError(f"{bad}: invalid files entry {part!r}: {entry!r}")
        live += shard["count"] - len(deleted)
    if live != manifest["count"]:
        raise ArtifactError(
            f"{where}: the shards hold {live} live items, manifest count says {manifest['count']}"
        )
