"""Read side of the index format (docs/formats.md, "Index"): pointer, manifest checks, HNSW search.

Torch-free: hnswlib + numpy + json. Works on local directories and S3 prefixes through
:mod:`handler.core.storage`; S3 objects are cached in a local directory (``/tmp`` on Lambda).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from handler.core.errors import ArtifactError, BadInputError, ModelMismatchError
from handler.core.preprocess import ImageOptions
from handler.core.storage import LocalStore, Store, fetch_dir, file_digest, open_store

__all__ = [
    "INDEX_FILES",
    "KIND",
    "MANIFEST",
    "POINTER",
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
        manifest: dict[str, Any] = json.loads(raw)
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
            not isinstance(name, str) or "/" in name or name in ("", ".", "..", MANIFEST)
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


class Hit(NamedTuple):
    """One search result: hnswlib label (row number), inner-product score, and a copy of the item."""

    label: int
    score: float
    item: dict[str, Any]


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


class SearchIndex:
    """A loaded index version. Thread-safe for concurrent :meth:`search` calls.

    Attributes: ``version``, ``manifest``, ``dim``, ``count``, ``items`` (list of dicts, row = label;
    treat as read-only), ``model_fingerprint``, ``ef`` (default query ef), ``files_dir`` (local directory
    holding the version's files), ``image_options`` (how the builder prepared images: queries and
    thumbnails use the same).
    """

    def __init__(
        self,
        manifest: dict[str, Any],
        hnsw: Any | None,
        items: list[dict[str, Any]],
        files_dir: Path | None = None,
    ):
        self.manifest = manifest
        self.version: str = manifest["version"]
        self.dim: int = int(manifest["dim"])
        self.count: int = int(manifest["count"])
        self.model_fingerprint: str = manifest["model_fingerprint"]
        self.ef: int = int(manifest.get("ef", 64))
        self.image_options: ImageOptions = ImageOptions.from_manifest(manifest.get("image_preprocess"))
        self.items = items
        self.files_dir = files_dir
        self._hnsw = hnsw
        self._gate = _EfGate(hnsw, self.ef) if hnsw is not None and self.count else None
        self._ids: dict[Any, int] | None = None
        self._ids_lock = threading.Lock()
        self._embeddings: np.ndarray | None = None
        self._emb_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SearchIndex(version={self.version!r}, count={self.count}, dim={self.dim})"

    def __len__(self) -> int:
        return self.count

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        offset: int = 0,
        ef: int | None = None,
        min_score: float | None = None,
    ) -> list[list[Hit]]:
        """Top hits per query row ranked by inner product, descending.

        ``vectors``: ``[n, dim]`` or ``[dim]`` (L2-normalised query embeddings). Returns one list per
        row, holding ranks ``offset .. offset+k-1`` (fewer when the index runs out), restricted to
        ``score >= min_score`` when given. ``ef`` defaults to the manifest's and is raised to
        ``k + offset`` when smaller. An empty index returns empty lists.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise BadInputError(f"k must be a positive integer, got {k!r}")
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
            raise BadInputError(f"offset must be a non-negative integer, got {offset!r}")
        if ef is not None and (isinstance(ef, bool) or not isinstance(ef, (int, np.integer)) or ef < 1):
            raise BadInputError(f"ef must be a positive integer, got {ef!r}")
        if min_score is not None and not np.isfinite(min_score):
            raise BadInputError(f"min_score must be a finite number, got {min_score!r}")
        queries = np.asarray(vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"query vectors must have shape [n, {self.dim}] or [{self.dim}], got {queries.shape}")
        if not np.all(np.isfinite(queries)):
            raise ValueError("query vectors contain NaN or infinity")
        n = queries.shape[0]
        want = min(int(k) + int(offset), self.count)
        if n == 0 or want <= offset or self._gate is None:
            return [[] for _ in range(n)]
        queries = np.ascontiguousarray(queries)
        ef_eff = max(int(ef if ef is not None else self.ef), want)
        labels, distances = self._knn(queries, want, ef_eff)
        results: list[list[Hit]] = []
        for row_labels, row_dist in zip(labels, distances, strict=True):
            hits: list[Hit] = []
            for label, dist in zip(row_labels[offset:], row_dist[offset:], strict=True):
                score = float(1.0 - dist)
                if min_score is not None and score < min_score:
                    break  # ranked by score: everything after is lower
                hits.append(Hit(int(label), score, dict(self.items[int(label)])))
            results.append(hits)
        return results

    def _knn(self, queries: np.ndarray, want: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        assert self._gate is not None and self._hnsw is not None
        for attempt_ef in (ef, max(ef * 4, 256), max(ef, self.count)):
            self._gate.acquire(attempt_ef)
            try:
                labels, distances = self._hnsw.knn_query(queries, k=want, num_threads=1)
                return labels, distances
            except RuntimeError:
                continue  # "Cannot return the results in a contiguous 2D array": search wider
            finally:
                self._gate.release()
        raise ArtifactError(f"index version {self.version}: HNSW search returned fewer than {want} results")

    def _id_map(self) -> dict[Any, int]:
        if self._ids is None:
            with self._ids_lock:
                if self._ids is None:
                    ids: dict[Any, int] = {}
                    for label, item in enumerate(self.items):
                        if isinstance(item, dict) and "id" in item:
                            ids.setdefault(item["id"], label)
                    self._ids = ids
        return self._ids

    def label_for(self, item_id: Any) -> int | None:
        """The label (row) of the item whose ``id`` is ``item_id``, or None."""
        return self._id_map().get(item_id)

    def get_item(self, item_id: Any) -> dict[str, Any] | None:
        """A copy of the item whose ``id`` is ``item_id``, or None."""
        label = self.label_for(item_id)
        return None if label is None else dict(self.items[label])

    def embedding(self, label: int) -> np.ndarray:
        """The stored float32 ``[dim]`` vector of ``label`` (a copy): from ``embeddings.npy`` when it is
        available locally (memory-mapped on first use), otherwise from the HNSW index itself."""
        label = int(label)
        if not 0 <= label < self.count:
            raise IndexError(f"label {label} out of range for an index of {self.count} items")
        emb = self._embeddings_array()
        if emb is not None:
            return np.array(emb[label], dtype=np.float32)
        assert self._hnsw is not None
        return np.asarray(self._hnsw.get_items([label], return_type="numpy")[0], dtype=np.float32)

    def _embeddings_array(self) -> np.ndarray | None:
        if self._embeddings is None and self.files_dir is not None:
            path = self.files_dir / EMBEDDINGS_FILE
            if EMBEDDINGS_FILE in self.manifest["files"] and path.is_file():
                with self._emb_lock:
                    if self._embeddings is None:
                        try:
                            arr = np.load(path, mmap_mode="r", allow_pickle=False)
                        except (OSError, ValueError) as e:
                            raise ArtifactError(f"{path}: cannot load ({e})") from None
                        if arr.shape != (self.count, self.dim):
                            raise ArtifactError(
                                f"{path}: shape {arr.shape} != manifest ({self.count}, {self.dim})"
                            )
                        self._embeddings = arr
        return self._embeddings


def _check_file(path: Path, name: str, entry: Mapping[str, Any], verify: bool, where: str) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ArtifactError(f"{where}: file {name} is missing") from None
    if size != entry["size"]:
        raise ArtifactError(f"{where}: file {name} has size {size}, manifest says {entry['size']}")
    if verify:
        digest, _ = file_digest(path)
        if digest != entry["sha256"]:
            raise ArtifactError(f"{where}: file {name} sha256 {digest} does not match manifest {entry['sha256']}")


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
        raise ArtifactError(f"{where}: {HNSW_FILE} holds {index.get_current_count()} vectors, manifest says {count}")
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
    against ``expected_fingerprint`` (:class:`ModelMismatchError`); each file's size and (``verify``)
    sha256 against the manifest (:class:`ArtifactError` naming the file); the HNSW header against
    ``dim``/``count``; the number of items.

    Local stores are read in place (every file of the manifest is checked). S3 stores are cached under
    ``cache_dir/<hash of the URI>/versions/<id>/`` (default: ``$TMPDIR/clip-index-cache``); files already
    cached with the right size/sha256 are not downloaded again; only ``index.hnsw`` and ``items.jsonl``
    are fetched (plus ``embeddings.npy`` with ``fetch_embeddings``; otherwise :meth:`SearchIndex.embedding`
    reads vectors from the HNSW index). Cached files of other versions of the same index are removed
    after a successful load.
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
    files: dict[str, dict[str, Any]] = manifest["files"]
    prefix = version_prefix(version)
    try:
        if isinstance(store, LocalStore):
            files_dir = store.root / prefix
            wanted = list(files)
        else:
            wanted = [n for n in files if n in REQUIRED_FILES or (fetch_embeddings and n == EMBEDDINGS_FILE)]
            expected = {
                prefix + n: {"size": files[n]["size"], "sha256": files[n]["sha256"] if verify else None}
                for n in wanted
            }
            root = _cache_root(store, cache_dir)
            files_dir = fetch_dir(store, root, list(expected), expected=expected) / prefix
    except FileNotFoundError as e:
        raise ArtifactError(f"{where}: a file of the version is missing ({e})") from None
    for name in wanted:
        _check_file(files_dir / name, name, files[name], verify and isinstance(store, LocalStore), where)
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
