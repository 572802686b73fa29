"""Loading an index version (docs/formats.md, "Index"): files fetched and checked, HNSW and items loaded.
Pointer and manifest: :mod:`handler.core.index_format`; search: :mod:`handler.core.search` (both
re-exported here).

Torch-free: hnswlib + numpy + json. Works on local directories and S3 prefixes through
:mod:`handler.core.storage`; S3 objects are cached in a local directory (``/tmp`` on Lambda).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from handler.core.errors import ArtifactError, ModelMismatchError
from handler.core.index_format import (
    DEFAULT_CACHE_DIR,
    EMBEDDINGS_FILE,
    ERRORS_FILE,
    HNSW_FILE,
    INDEX_FILES,
    ITEMS_FILE,
    KIND,
    MANIFEST,
    POINTER,
    REQUIRED_FILES,
    SCHEMA_VERSION,
    _as_store,
    check_for_update,
    read_manifest,
    read_pointer,
    valid_version_id,
    version_prefix,
)
from handler.core.search import Hit, SearchIndex, _EfGate  # noqa: F401  (_EfGate: tests import it here)
from handler.core.storage import RECORDS_DIR, LocalStore, StorageError, Store, VerifiedRecords, fetch_files

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
    "Hit",
    "SearchIndex",
    "check_for_update",
    "load_index",
    "read_manifest",
    "read_pointer",
    "valid_version_id",
    "version_prefix",
]


def _hnsw_header(path: Path) -> tuple[int, int]:
    """(element count, vector bytes per element) from an hnswlib file header."""
    with open(path, "rb") as f:
        head = f.read(48)
    if len(head) < 48:
        raise ValueError("file too short")
    _offset0, _max_elements, count, _size_per_element, label_offset, offset_data = struct.unpack("<6Q", head)
    return count, label_offset - offset_data


def _load_hnsw(path: Path, dim: int, count: int, where: str) -> Any:
    import hnswlib

    try:
        header_count, data_size = _hnsw_header(path)
    except (OSError, ValueError, struct.error) as e:
        raise ArtifactError(f"{where}: {HNSW_FILE} unreadable ({e})") from None
    if header_count != count or data_size != dim * 4:
        raise ArtifactError(
            f"{where}: {HNSW_FILE} holds {header_count} vectors of {data_size // 4} floats, "
            f"manifest says {count} x {dim}"
        )
    index = hnswlib.Index(space="ip", dim=dim)
    try:
        index.load_index(str(path), max_elements=count)
    except (RuntimeError, ValueError) as e:
        raise ArtifactError(f"{where}: {HNSW_FILE} cannot be loaded ({e})") from None
    if index.get_current_count() != count:
        raise ArtifactError(
            f"{where}: {HNSW_FILE} holds {index.get_current_count()} vectors, manifest says {count}"
        )
    return index


def _load_items(path: Path, count: int, where: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as e:
                raise ArtifactError(f"{where}: {ITEMS_FILE} line {lineno} is not valid JSON ({e})") from None
            if not isinstance(item, dict):
                raise ArtifactError(f"{where}: {ITEMS_FILE} line {lineno} is not a JSON object")
            items.append(item)
    if len(items) != count:
        raise ArtifactError(f"{where}: {ITEMS_FILE} has {len(items)} items, manifest says {count}")
    return items


def _fetch_files(
    store: Store,
    version: str,
    files: Mapping[str, Mapping[str, Any]],
    cache_dir: str | Path | None,
    verify: bool,
    fetch_embeddings: bool,
    where: str,
) -> Path:
    """The directory holding the version's files, each checked against the manifest: size, and sha256
    (trusted without hashing when this cache's records say the file is unchanged since it was verified).
    S3: only the files search needs, downloaded concurrently into the cache, hashed while streaming
    whatever ``verify`` says. Local: every file checked in place, sha256 only when ``verify`` and never
    for ``embeddings.npy`` (off the cold path: size only)."""
    prefix = version_prefix(version)
    local = isinstance(store, LocalStore)
    names = [n for n in files if local or n in REQUIRED_FILES or (fetch_embeddings and n == EMBEDDINGS_FILE)]
    hashed = [n for n in names if (verify or not local) and (n != EMBEDDINGS_FILE or fetch_embeddings)]
    expected = {
        prefix + n: {"size": files[n]["size"], "sha256": files[n]["sha256"] if n in hashed else None}
        for n in names
    }
    base = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    root = _cache_root(store, cache_dir)
    records = VerifiedRecords(base / RECORDS_DIR)  # one per cache; a stale record is never trusted
    try:
        with fetch_files(store, list(expected), root, expected=expected, records=records) as job:
            paths = job.wait()
    except FileNotFoundError as e:
        raise ArtifactError(f"{where}: a file of the version is missing ({e})") from None
    except StorageError:
        raise
    except ArtifactError as e:
        raise ArtifactError(f"{where}: {e}") from None
    return paths[prefix + HNSW_FILE].parent


def _cache_root(store: Store, cache_dir: str | Path | None) -> Path:
    base = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    return base / hashlib.sha256(store.uri.encode()).hexdigest()[:16]


def load_index(
    uri: str | Store,
    expected_fingerprint: str | None = None,
    cache_dir: str | Path | None = None,
    verify: bool = True,
    *,
    fetch_embeddings: bool = False,
) -> SearchIndex:
    """Load the version the ``CURRENT`` pointer names.

    Checks: manifest sha256 against the pointer, schema_version, kind, fields; the model fingerprint
    against ``expected_fingerprint`` (:class:`ModelMismatchError`); each file's size and sha256 against
    the manifest (:class:`ArtifactError` naming the file; local stores: sha256 only with ``verify``, and
    once per cache: records in ``cache_dir/.verified`` let an unchanged file pass unhashed, see
    :mod:`handler.core.storage.verified`); the HNSW header against ``dim``/``count``; the number of items.

    Local stores are read in place (every file of the manifest is checked). S3 stores are cached under
    ``cache_dir/<hash of the URI>/versions/<id>/`` (default: ``$TMPDIR/clip-index-cache``), downloaded
    with concurrent ranged GETs and hashed while streaming (:mod:`handler.core.storage.fetch`); files
    already cached with the right size/sha256 are not downloaded again; only ``index.hnsw`` and
    ``items.jsonl`` are fetched (plus ``embeddings.npy`` with ``fetch_embeddings``; otherwise
    :meth:`SearchIndex.embedding` reads vectors from the HNSW index). Cached files of other versions of
    the same index are removed after a successful load.
    """
    store = _as_store(uri)
    pointer = read_pointer(store)
    if pointer is None:
        raise ArtifactError(f"no index at {store.uri}: {POINTER} pointer missing")
    version = pointer["version"]
    manifest = read_manifest(store, version, pointer["manifest_sha256"])
    where = store.uri_for(version_prefix(version) + MANIFEST)
    if expected_fingerprint is not None and manifest["model_fingerprint"] != expected_fingerprint:
        raise ModelMismatchError(
            f"index {store.uri} version {version} was built with model {manifest['model_fingerprint']}, "
            f"but the bundle in use is {expected_fingerprint}; rebuild the index with this bundle"
        )
    files_dir = _fetch_files(store, version, manifest["files"], cache_dir, verify, fetch_embeddings, where)
    hnsw = _load_hnsw(files_dir / HNSW_FILE, manifest["dim"], manifest["count"], where)
    items = _load_items(files_dir / ITEMS_FILE, manifest["count"], where)
    index = SearchIndex(manifest, hnsw, items, files_dir=files_dir)
    if not isinstance(store, LocalStore):
        _evict_other_versions(_cache_root(store, cache_dir), version)
    return index


def _evict_other_versions(root: Path, keep: str) -> None:
    versions = root / "versions"
    try:
        entries = list(versions.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name != keep and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
