"""Loading an index version (docs/formats.md, "Index"): files fetched and checked, shards (HNSW + items)
loaded.
Pointer and manifest: :mod:`handler.core.index_format`; search: :mod:`handler.core.search`.

Torch-free: hnswlib + numpy + json. Works on local directories and S3 prefixes through
:mod:`handler.core.storage`; S3 objects are cached in a local directory (``/tmp`` on Lambda).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from handler.core.errors import ArtifactError, ModelMismatchError
from handler.core.hnsw_vectors import read_header
from handler.core.index_format import (
    DEFAULT_CACHE_DIR,
    HNSW_FILE,
    ITEMS_FILE,
    MANIFEST,
    POINTER,
    SHARDS_PREFIX,
    _as_store,
    read_manifest,
    read_pointer,
    shard_specs,
    version_prefix,
)
from handler.core.search import SearchIndex
from handler.core.shards import Shard
from handler.core.storage import RECORDS_DIR, LocalStore, StorageError, Store, VerifiedRecords, fetch_files

__all__ = ["fetch_plan", "load_index"]


def _load_hnsw(path: Path, dim: int, count: int, where: str, name: str = HNSW_FILE) -> Any:
    import hnswlib

    try:
        header = read_header(path)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{where}: {name} unreadable ({e})") from None
    if header.elements != count or header.data_bytes != dim * 4:
        raise ArtifactError(
            f"{where}: {name} holds {header.elements} vectors of {header.data_bytes // 4} floats, "
            f"manifest says {count} x {dim}"
        )
    index = hnswlib.Index(space="ip", dim=dim)
    try:
        index.load_index(str(path), max_elements=count)
    except (RuntimeError, ValueError) as e:
        raise ArtifactError(f"{where}: {name} cannot be loaded ({e})") from None
    if index.get_current_count() != count:
        raise ArtifactError(
            f"{where}: {name} holds {index.get_current_count()} vectors, manifest says {count}"
        )
    return index


def _load_items(path: Path, count: int, where: str, name: str = ITEMS_FILE) -> list[dict[str, Any]]:
    """The items of a shard: one JSON object per line (blank lines skipped). Parsed as one JSON array (one
    C call: ~5x less CPU than a json.loads per line, the largest Python cost of a cold load) when that
    gives one object per line; otherwise line by line, which names the first bad line."""
    with open(path, encoding="utf-8") as f:  # universal newlines, as iterating the file did
        text = f.read()
    rows = [line for line in text.split("\n") if line.strip()]
    try:
        items: Any = json.loads("[" + ",".join(rows) + "]")
    except ValueError:
        items = None
    if not isinstance(items, list) or len(items) != len(rows) or not all(isinstance(i, dict) for i in items):
        items = _parse_lines(text, where, name)
    if len(items) != count:
        raise ArtifactError(f"{where}: {name} has {len(items)} items, manifest says {count}")
    parsed: list[dict[str, Any]] = items
    return parsed


def _parse_lines(text: str, where: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as e:
            raise ArtifactError(f"{where}: {name} line {lineno} is not valid JSON ({e})") from None
        if not isinstance(item, dict):
            raise ArtifactError(f"{where}: {name} line {lineno} is not a JSON object")
        items.append(item)
    return items


def fetch_plan(
    manifest: dict[str, Any], *, local: bool, verify: bool = True, fetch_embeddings: bool = False
) -> dict[str, dict[str, Any]]:
    """The files :func:`load_index` materialises for a validated manifest: key -> ``{"size", "sha256"}``
    (sha256 None: size only), in download order. A local store checks every file the version names; from
    S3 come each shard's items first (small: parsed while the HNSW files stream), then the HNSW files in
    shard order (shard i loads while shard i+1 downloads), then embeddings only with ``fetch_embeddings``
    (never on the cold path otherwise)."""
    prefix = version_prefix(manifest["version"])
    expected: dict[str, dict[str, Any]] = {}
    if local:
        for name, entry in manifest["files"].items():
            expected[prefix + name] = {"size": entry["size"], "sha256": entry["sha256"] if verify else None}
    for part in ("items", "hnsw", "embeddings"):
        if part == "embeddings" and not (local or fetch_embeddings):
            continue
        hashed = (verify or not local) and (part != "embeddings" or fetch_embeddings)
        for spec in shard_specs(manifest):
            entry = spec.files.get(part)
            if entry is not None:
                expected[entry["key"]] = {
                    "size": entry["size"],
                    "sha256": entry["sha256"] if hashed else None,
                }
    return expected


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
    the manifest (:class:`ArtifactError` naming the file; local stores: sha256 only with ``verify``, once
    per cache - records in ``cache_dir/.verified`` let an unchanged file pass unhashed, see
    :mod:`handler.core.storage.verified` - and never for embeddings, which are off the cold path: size
    only); each HNSW header against ``dim``/count; the number of items.

    Local stores are read in place. S3 stores are cached under ``cache_dir/<hash of the URI>/`` (default:
    ``$TMPDIR/clip-index-cache``) in the store's layout, downloaded with concurrent ranged GETs and hashed
    while streaming (:mod:`handler.core.storage.fetch`); files already cached with the right size/sha256
    are not downloaded again; only the HNSW and items files of each shard are fetched (plus embeddings
    with ``fetch_embeddings``; otherwise :meth:`SearchIndex.embedding` reads vectors from the HNSW index).
    Each shard is loaded as soon as its files are there, while the others still download. Cached files
    that this version does not use (other versions, unreferenced shards) are removed after a successful
    load; tombstoned rows are marked deleted.
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
    prefix = version_prefix(version)
    local = isinstance(store, LocalStore)
    specs = shard_specs(manifest)
    expected = fetch_plan(manifest, local=local, verify=verify, fetch_embeddings=fetch_embeddings)
    root = store.root if isinstance(store, LocalStore) else _cache_root(store, cache_dir)
    base = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    records = VerifiedRecords(base / RECORDS_DIR)  # one per cache; a stale record is never trusted
    offsets = [sum(s.count for s in specs[:i]) for i in range(len(specs))]
    with fetch_files(store, list(expected), root, expected=expected, records=records) as job:

        def path(key: str) -> Path:
            try:
                return job.futures[key].result()
            except FileNotFoundError as e:
                raise ArtifactError(f"{where}: a file of the version is missing ({e})") from None
            except StorageError:
                raise
            except ArtifactError as e:
                raise ArtifactError(f"{where}: {e.message}") from None

        def load(i: int) -> tuple[Shard, list[dict[str, Any]]]:  # as soon as this shard's files are in
            spec = specs[i]
            hnsw_key, items_key = spec.files["hnsw"]["key"], spec.files["items"]["key"]
            items_name = ITEMS_FILE if manifest["schema_version"] == 1 else items_key
            items = _load_items(path(items_key), spec.count, where, items_name)  # while the HNSW files stream
            name = HNSW_FILE if manifest["schema_version"] == 1 else hnsw_key
            hnsw = _load_hnsw(path(hnsw_key), manifest["dim"], spec.count, where, name)
            for label in spec.deleted:
                hnsw.mark_deleted(label)
            emb = spec.files.get("embeddings")
            emb_path = path(emb["key"]) if emb and emb["key"] in expected else None
            shard = Shard(
                hnsw,
                offsets[i],
                spec.count,
                spec.deleted,
                spec.ef,
                emb_path,
                spec.ef_by_query,
                path(hnsw_key),
            )
            return shard, items

        if len(specs) > 1:
            with ThreadPoolExecutor(min(len(specs), 8), thread_name_prefix="shard-load") as pool:
                loaded = list(pool.map(load, range(len(specs))))
        else:
            loaded = [load(i) for i in range(len(specs))]
        for key in expected:  # the version's own files (local: checked too)
            path(key)
    items = [row for _, rows in loaded for row in rows]
    files_dir = root / prefix
    index = SearchIndex(manifest, None, items, files_dir=files_dir, shards=[s for s, _ in loaded])
    if not local:
        _evict_unused(_cache_root(store, cache_dir), version, set(expected))
    return index


def _evict_unused(root: Path, keep: str, keys: set[str]) -> None:
    """Remove cached files of other versions and shard files this version does not use."""
    with contextlib.suppress(OSError):
        for entry in list((root / "versions").iterdir()):
            if entry.name != keep and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
    with contextlib.suppress(OSError):
        for entry in list((root / SHARDS_PREFIX).iterdir()):
            if SHARDS_PREFIX + entry.name not in keys and entry.is_file():
                entry.unlink(missing_ok=True)
