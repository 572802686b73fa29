"""Where images come from: a local folder (recursive), an S3 prefix, or a JSONL manifest.

Every source lists :class:`SourceItem` rows (id, uri, size, mtime, etag, metadata) cheaply - no image
bytes are read while listing, only small JSON sidecars - and reads one item's bytes on demand
(:meth:`Source.read`, thread-safe, called from the decode workers).

Ids: folder -> path relative to the folder (POSIX); S3 -> key relative to the prefix; JSONL -> the
line's ``id``. Only image extensions (:data:`IMAGE_EXTENSIONS`) are considered in folders and prefixes;
names starting with ``.`` (hidden files and folders, temp files, a ``.work`` dir) are skipped.
Metadata: a JSONL line's fields other than ``id``/``uri``, or a sidecar ``<stem>.json`` next to the image.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from handler.storage import S3Store, Store, open_store

__all__ = ["IMAGE_EXTENSIONS", "BuildError", "Source", "SourceItem", "open_source"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
SIDECAR_SUFFIX = ".json"


class BuildError(Exception):
    """A failure the user can act on; the CLI prints the message (no traceback) and exits non-zero."""

    exit_code = 1


class UsageError(BuildError):
    """A bad command-line value (exit code 2)."""

    exit_code = 2


@dataclass
class SourceItem:
    """One image of the source. ``error`` is set when listing already knows it cannot be read
    (a broken symlink, a missing object): ``(reason, message)``."""

    id: str | int
    uri: str
    size: int | None = None
    mtime: float | None = None
    etag: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: tuple[str, str] | None = None
    key: str | None = None  # the S3 key inside the source's store (S3 sources)


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def _parse_sidecar(raw: bytes, where: str, warn: Callable[[str], None]) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        warn(f"sidecar {where} is not valid JSON ({e}); indexing the image without metadata")
        return {}
    if not isinstance(meta, dict):
        warn(f"sidecar {where} is not a JSON object; indexing the image without metadata")
        return {}
    return meta


class Source:
    """Base class. ``uri`` is recorded in the index manifest."""

    uri: str
    warn: Callable[[str], None] = staticmethod(_warn)

    def list(self) -> list[SourceItem]:
        raise NotImplementedError

    def read(self, item: SourceItem) -> bytes:
        raise NotImplementedError


class _Readers:
    """Reads local paths and ``s3://`` URIs; one S3 store per bucket, shared by threads."""

    def __init__(self) -> None:
        self._stores: dict[str, Store] = {}
        self._lock = threading.Lock()

    def store(self, bucket: str) -> Store:
        with self._lock:
            if bucket not in self._stores:
                self._stores[bucket] = open_store(f"s3://{bucket}")
            return self._stores[bucket]

    def read(self, uri: str) -> bytes:
        if uri.startswith("s3://"):
            bucket, _, key = uri[5:].partition("/")
            return self.store(bucket).read_bytes(key)
        return Path(uri).read_bytes()


class FolderSource(Source):
    def __init__(self, root: Path):
        self.root = root.expanduser().absolute()
        self.uri = str(self.root)

    def list(self) -> list[SourceItem]:
        items: list[SourceItem] = []
        self._walk(self.root, "", items)
        items.sort(key=lambda it: str(it.id))
        return items

    def _walk(self, directory: Path, rel: str, out: list[SourceItem]) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as e:
            if directory == self.root:
                raise BuildError(f"--source {self.root}: cannot list the folder ({e.strerror or e})") from None
            self.warn(f"cannot list folder {directory} ({e.strerror or e}); skipped")
            return
        names = {e.name for e in entries}
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                self._walk(Path(entry.path), f"{rel}{entry.name}/", out)
                continue
            if not is_image_name(entry.name):
                continue
            item = SourceItem(id=rel + entry.name, uri=entry.path)
            try:
                st = os.stat(entry.path)  # follows symlinks: broken links and loops fail here
            except OSError as e:
                item.error = ("unreadable", f"cannot stat {entry.path}: {e.strerror or e}")
                out.append(item)
                continue
            if stat.S_ISDIR(st.st_mode):
                if entry.is_symlink():  # a link to a folder named like an image: not followed
                    item.error = ("unreadable", f"{entry.path} is a symlink to a directory, not an image file")
                    out.append(item)
                continue
            if not stat.S_ISREG(st.st_mode):
                item.error = ("unreadable", f"{entry.path} is not a regular file")
                out.append(item)
                continue
            item.size, item.mtime = int(st.st_size), float(st.st_mtime)
            sidecar = str(PurePosixPath(entry.name).with_suffix(SIDECAR_SUFFIX))
            if sidecar in names:
                path = Path(directory) / sidecar
                try:
                    item.metadata = _parse_sidecar(path.read_bytes(), str(path), self.warn)
                except OSError as e:
                    self.warn(f"cannot read sidecar {path} ({e.strerror or e}); indexing without metadata")
            out.append(item)

    def read(self, item: SourceItem) -> bytes:
        return Path(item.uri).read_bytes()


def _parallel(fn: Callable[[Any], Any], values: Iterable[Any], workers: int) -> list[Any]:
    values = list(values)
    if len(values) <= 1 or workers <= 1:
        return [fn(v) for v in values]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="list") as ex:
        return list(ex.map(fn, values))


class S3Source(Source):
    def __init__(self, store: S3Store, workers: int = 8):
        self.store = store
        self.uri = store.uri
        self.workers = workers

    def list(self) -> list[SourceItem]:
        from handler.storage import NotFoundError

        try:
            objects = list(self.store.list(""))
        except NotFoundError as e:
            raise BuildError(f"--source {self.uri}: {e}; check the bucket name") from None
        keys = {o.key for o in objects}
        items: list[SourceItem] = []
        for obj in objects:
            if any(part.startswith(".") for part in obj.key.split("/")) or not is_image_name(obj.key):
                continue
            items.append(SourceItem(id=obj.key, uri=self.store.uri_for(obj.key), size=obj.size, mtime=obj.mtime,
                                    etag=obj.etag, key=obj.key))
        items.sort(key=lambda it: str(it.id))

        def sidecar(item: SourceItem) -> None:
            key = str(PurePosixPath(item.key or "").with_suffix(SIDECAR_SUFFIX))
            if key not in keys:
                return
            try:
                item.metadata = _parse_sidecar(self.store.read_bytes(key), self.store.uri_for(key), self.warn)
            except NotFoundError:  # deleted since the listing
                self.warn(f"sidecar {self.store.uri_for(key)} disappeared; indexing without metadata")

        _parallel(sidecar, items, self.workers)
        return items

    def read(self, item: SourceItem) -> bytes:
        assert item.key is not None
        return self.store.read_bytes(item.key)


class JsonlSource(Source):
    """Lines ``{"id": ..., "uri": ..., ...metadata}``; relative local paths are resolved against the
    manifest's folder (or S3 prefix). Blank lines are ignored; duplicate ids are an error."""

    def __init__(self, uri: str, workers: int = 8):
        self.uri = uri
        self.workers = workers
        self._readers = _Readers()

    def _load_text(self) -> tuple[str, str]:
        """(text, base for relative uris)."""
        if self.uri.startswith("s3://"):
            parent, _, name = self.uri.rstrip("/").rpartition("/")
            store = open_store(parent)
            try:
                raw = store.read_bytes(name)
            except FileNotFoundError:
                raise BuildError(f"--source {self.uri}: no such manifest object") from None
            base = parent + "/"
        else:
            path = Path(self.uri[7:] if self.uri.startswith("file://") else self.uri).expanduser().absolute()
            try:
                raw = path.read_bytes()
            except OSError as e:
                raise BuildError(f"--source {self.uri}: cannot read the manifest ({e.strerror or e})") from None
            base = str(path.parent) + os.sep
            self.uri = str(path)
        try:
            return raw.decode("utf-8"), base
        except UnicodeDecodeError as e:
            raise BuildError(f"--source {self.uri}: not UTF-8 text ({e})") from None

    def list(self) -> list[SourceItem]:
        text, base = self._load_text()
        items: list[SourceItem] = []
        seen: dict[Any, int] = {}
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"--source {self.uri} line {lineno}"
            try:
                row = json.loads(line)
            except ValueError as e:
                raise BuildError(f"{where}: not valid JSON ({e})") from None
            if not isinstance(row, dict):
                raise BuildError(f"{where}: expected a JSON object with 'id' and 'uri'")
            item_id, uri = row.get("id"), row.get("uri")
            if isinstance(item_id, bool) or not isinstance(item_id, (str, int)) or item_id == "":
                raise BuildError(f"{where}: 'id' must be a non-empty string or an integer, got {item_id!r}")
            if not isinstance(uri, str) or not uri:
                raise BuildError(f"{where}: 'uri' must be a non-empty string (local path or s3://...), got {uri!r}")
            if item_id in seen:
                raise BuildError(f"{where}: duplicate id {item_id!r} (first on line {seen[item_id]}); ids must be unique")
            seen[item_id] = lineno
            if uri.startswith("file://"):
                uri = uri[7:]
            elif "://" in uri and not uri.startswith("s3://"):
                raise BuildError(f"{where}: unsupported uri {uri!r} (use a local path or s3://bucket/key)")
            if not uri.startswith("s3://"):
                uri = os.path.expanduser(uri)
                if not os.path.isabs(uri):
                    uri = base + uri if base.startswith("s3://") else os.path.join(base, uri)
                if not uri.startswith("s3://"):
                    uri = os.path.normpath(uri)
            metadata = {k: v for k, v in row.items() if k not in ("id", "uri")}
            items.append(SourceItem(id=item_id, uri=uri, metadata=metadata))
        _parallel(self._stat, items, self.workers)
        return items

    def _stat(self, item: SourceItem) -> None:
        if item.uri.startswith("s3://"):
            bucket, _, key = item.uri[5:].partition("/")
            from handler.errors import ConfigError
            from handler.storage import NotFoundError

            try:
                store = self._readers.store(bucket)
                for obj in store.list(key):
                    if obj.key == key:
                        item.size, item.mtime, item.etag = obj.size, obj.mtime, obj.etag
                        return
                item.error = ("unreadable", f"no such object: {item.uri}")
            except (NotFoundError, ConfigError, ValueError) as e:  # no such bucket, malformed uri or key
                item.error = ("unreadable", f"cannot stat {item.uri}: {e}")
            # any other StorageError (network, credentials) propagates: the build stops, publishes nothing
            return
        try:
            st = os.stat(item.uri)
        except OSError as e:
            item.error = ("unreadable", f"cannot stat {item.uri}: {e.strerror or e}")
            return
        if not stat.S_ISREG(st.st_mode):
            item.error = ("unreadable", f"{item.uri} is not a regular file")
            return
        item.size, item.mtime = int(st.st_size), float(st.st_mtime)

    def read(self, item: SourceItem) -> bytes:
        return self._readers.read(item.uri)


def open_source(uri: str, workers: int = 8) -> Source:
    """A folder, ``s3://bucket/prefix`` (a key ending in ``.jsonl`` is a manifest) or a ``.jsonl`` file."""
    from handler.errors import ConfigError

    if not isinstance(uri, str) or not uri.strip():
        raise UsageError("--source is empty: pass a folder, an s3://bucket/prefix or a JSONL manifest")
    if uri.startswith("s3://"):
        if uri.rstrip("/").endswith(".jsonl"):
            return JsonlSource(uri, workers)
        try:
            store = open_store(uri)
        except ConfigError as e:
            raise UsageError(f"--source: {e.message}") from None
        assert isinstance(store, S3Store)
        return S3Source(store, workers)
    if "://" in uri and not uri.startswith("file://"):
        raise UsageError(f"--source {uri!r}: unsupported scheme (use a folder, a .jsonl file or s3://bucket/prefix)")
    path = Path(uri[7:] if uri.startswith("file://") else uri).expanduser()
    if path.is_dir():
        return FolderSource(path)
    if path.is_file():
        return JsonlSource(str(path), workers)
    raise UsageError(f"--source {uri}: no such folder or manifest file")
