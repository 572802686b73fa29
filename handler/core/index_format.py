"""The index format's pointer and manifest (docs/formats.md, "Index"): names, version ids, reading and
validating ``CURRENT`` and ``versions/<id>/manifest.json``. The writer is index_builder.publish."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from handler.core.errors import ArtifactError
from handler.core.preprocess import ImageOptions
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
    "REQUIRED_FILES",
    "SCHEMA_VERSION",
    "check_for_update",
    "read_manifest",
    "read_pointer",
    "valid_version_id",
    "version_prefix",
]

SCHEMA_VERSION = 1
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
        manifest = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise ArtifactError(f"{where}: not valid JSON ({e})") from None
    _validate_manifest(manifest, version, where)
    return manifest


def _validate_manifest(manifest: Any, version: str, where: str) -> None:
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{where}: expected a JSON object")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{where}: unsupported schema_version {manifest.get('schema_version')!r} (expected {SCHEMA_VERSION})"
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
    for name in REQUIRED_FILES:
        if name not in files:
            raise ArtifactError(f"{where}: 'files' lacks {name!r}")
    try:
        ImageOptions.from_manifest(manifest.get("image_preprocess"))
    except ArtifactError as e:
        raise ArtifactError(f"{where}: {e.message}") from None
