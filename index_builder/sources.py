"""Where images come from: a local folder (recursive), an S3 prefix, or a JSONL manifest.

Every source lists :class:`SourceItem` rows (id, uri, size, mtime, etag, metadata) cheaply - no image
bytes are read while listing, only small JSON sidecars - and reads one item's bytes on demand
(:meth:`Source.read`, thread-safe, called from the decode workers).

Ids: folder -> path relative to the folder (POSIX); S3 -> key relative to the prefix; JSONL -> the
line's ``id``. Only image extensions (:data:`IMAGE_EXTENSIONS`) are considered in folders and prefixes;
names starting with ``.`` (hidden files and folders, temp files, a ``.work`` dir) are skipped. What a
listing passes over is counted in :attr:`Source.skipped` (by lower-case extension, ``hidden``, ``no
extension``) so the build can report it. Symlinks in a folder are followed only to files inside the folder.
Metadata: a JSONL line's fields other than ``id``/``uri``, or a sidecar ``<stem>.json`` next to the image.
Reads stop at :attr:`Source.max_bytes` (:class:`FileTooLargeError`), so a huge file is never read whole.
Size note: ~440 lines: the three sources share the readers, listing rules and sidecars.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from handler.core.errors import ConfigError
from handler.core.storage import S3Store, Store, TooLargeError, open_store, read_capped
from handler.core.uri import is_s3, parse_uri, scheme_of

__all__ = ["IMAGE_EXTENSIONS", "BuildError", "FileTooLargeError", "Source", "SourceItem", "open_source"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".ico")
SIDECAR_SUFFIX = ".json"
HIDDEN = "hidden"
NO_EXTENSION = "no extension"


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


class FileTooLargeError(Exception):
    """An item's file is larger than the source's ``max_bytes``; it was not read (beyond the limit)."""


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def skip_kind(name: str) -> str:
    """The bucket a skipped file is counted in: ``hidden``, its lower-case extension, or ``no extension``."""
    if name.startswith("."):
        return HIDDEN
    suffix = PurePosixPath(name).suffix.lower()
    return suffix if suffix and suffix != "." else NO_EXTENSION


def sidecar_name(name: str) -> str:
    """``a/b.jpg`` -> ``a/b.json`` (plain string edit: keys like ``a//b.jpg`` are not normalised)."""
    head, _, last = name.rpartition("/")
    stem = last.rsplit(".", 1)[0] if "." in last.lstrip(".") else last
    return f"{head}/{stem}{SIDECAR_SUFFIX}" if head else stem + SIDECAR_SUFFIX


def _bad_key(key: str) -> bool:
    """An S3 key with an empty, '.' or '..' segment: legal in S3, but not a safe relative path (id, uri)."""
    return any(p in ("", ".", "..") for p in key.split("/"))


def _warn(msg: str) -> None:
    logging.getLogger("index_builder.sources").warning(msg)


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
    max_bytes: int | None = None  # read() raises FileTooLargeError beyond this many bytes
    skipped: Counter[str]  # set by list(): files passed over, by skip_kind

    def list(self) -> list[SourceItem]:
        raise NotImplementedError

    def read(self, item: SourceItem) -> bytes:
        raise NotImplementedError


def _too_large(item: SourceItem, limit: int | None) -> FileTooLargeError:
    return FileTooLargeError(f"{item.uri} is larger than --max-file-bytes {limit}")


def _read_local(path: str, item: SourceItem, limit: int | None) -> bytes:
    try:
        with open(path, "rb") as f:
            return read_capped(f, limit, path)
    except TooLargeError:
        raise _too_large(item, limit) from None


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

    def read(self, item: SourceItem, limit: int | None) -> bytes:
        if is_s3(item.uri):
            loc = parse_uri(item.uri, check_s3_key=False)
            try:
                return self.store(loc.bucket).read_bytes(loc.key, max_bytes=limit)
            except TooLargeError:
                raise _too_large(item, limit) from None
        return _read_local(item.uri, item, limit)


class FolderSource(Source):
    def __init__(self, root: Path):
        self.root = root.expanduser().absolute()
        self.uri = str(self.root)
        self.skipped = Counter()

    def _inside(self, path: str) -> bool:
        """Whether a symlink resolves to a file inside the collection folder (links out are not followed)."""
        real = os.path.realpath(path)
        return os.path.commonpath([real, self._real_root]) == self._real_root

    def list(self) -> list[SourceItem]:
        items: list[SourceItem] = []
        self.skipped = Counter()
        self._real_root = os.path.realpath(self.root)
        self._walk(self.root, "", items)
        items.sort(key=lambda it: str(it.id))
        return items

    def _walk(self, directory: Path, rel: str, out: list[SourceItem]) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as e:
            if directory == self.root:
                raise BuildError(
                    f"--source {self.root}: cannot list the folder ({e.strerror or e})"
                ) from None
            self.warn(f"cannot list folder {directory} ({e.strerror or e}); skipped")
            return
        names = {e.name for e in entries}
        sidecars = {sidecar_name(n) for n in names if is_image_name(n)}
        for entry in entries:
            if entry.name.startswith("."):
                self.skipped[HIDDEN] += 1
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                self._walk(Path(entry.path), f"{rel}{entry.name}/", out)
                continue
            if not is_image_name(entry.name):
                if entry.name not in sidecars:
                    self.skipped[skip_kind(entry.name)] += 1
                continue
            item = SourceItem(id=rel + entry.name, uri=entry.path)
            if entry.is_symlink() and not self._inside(entry.path):
                item.error = (
                    "outside_root",
                    f"{entry.path} is a symlink to a file outside {self.root}; not followed",
                )
                out.append(item)
                continue
            try:
                st = os.stat(entry.path)  # follows symlinks: broken links and loops fail here
            except OSError as e:
                item.error = ("unreadable", f"cannot stat {entry.path}: {e.strerror or e}")
                out.append(item)
                continue
            if stat.S_ISDIR(st.st_mode):
                if entry.is_symlink():  # a link to a folder named like an image: not followed
                    item.error = (
                        "unreadable",
                        f"{entry.path} is a symlink to a directory, not an image file",
                    )
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
                if path.is_symlink() and not self._inside(str(path)):
                    self.warn(f"sidecar {path} is a symlink out of {self.root}; not followed, no metadata")
                    out.append(item)
                    continue
                try:
                    item.metadata = _parse_sidecar(path.read_bytes(), str(path), self.warn)
                except OSError as e:
                    self.warn(f"cannot read sidecar {path} ({e.strerror or e}); indexing without metadata")
            out.append(item)

    def read(self, item: SourceItem) -> bytes:
        return _read_local(item.uri, item, self.max_bytes)


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
        self.skipped = Counter()

    def list(self) -> list[SourceItem]:
        from handler.core.storage import NotFoundError

        try:
            objects = list(self.store.list(""))
        except NotFoundError as e:
            raise BuildError(f"--source {self.uri}: {e}; check the bucket name") from None
        keys = {o.key for o in objects}
        sidecars = {sidecar_name(k) for k in keys if is_image_name(k)}
        self.skipped = Counter()
        items: list[SourceItem] = []
        for obj in objects:
            name = obj.key.rsplit("/", 1)[-1]
            if any(part.startswith(".") and part not in (".", "..") for part in obj.key.split("/")):
                self.skipped[HIDDEN] += 1
                continue
            if not is_image_name(name):
                if obj.key not in sidecars:
                    self.skipped[skip_kind(name)] += 1
                continue
            if _bad_key(obj.key):  # cannot be an id / uri the service resolves: an error, not an abort
                uri = f"{self.uri}/{obj.key}"
                items.append(
                    SourceItem(
                        id=obj.key,
                        uri=uri,
                        size=obj.size,
                        mtime=obj.mtime,
                        etag=obj.etag,
                        error=(
                            "invalid_key",
                            f"{uri}: the key has an empty, '.' or '..' segment; "
                            "rename the object to index it",
                        ),
                    )
                )
                continue
            items.append(
                SourceItem(
                    id=obj.key,
                    uri=self.store.uri_for(obj.key),
                    size=obj.size,
                    mtime=obj.mtime,
                    etag=obj.etag,
                    key=obj.key,
                )
            )
        items.sort(key=lambda it: str(it.id))

        def sidecar(item: SourceItem) -> None:
            if item.error is not None:
                return
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
        try:
            return self.store.read_bytes(item.key, max_bytes=self.max_bytes)
        except TooLargeError:
            raise _too_large(item, self.max_bytes) from None


class JsonlSource(Source):
    """Lines ``{"id": ..., "uri": ..., ...metadata}``; relative local paths are resolved against the
    manifest's folder (or S3 prefix). Blank lines are ignored; duplicate ids are an error."""

    def __init__(self, uri: str, workers: int = 8):
        self.uri = uri
        self.workers = workers
        self._readers = _Readers()
        self.skipped = Counter()

    def _load_text(self) -> tuple[str, str]:
        """(text, base for relative uris)."""
        loc = parse_uri(self.uri)
        if loc.is_s3:
            parent, _, name = str(loc).rpartition("/")
            store = open_store(parent)
            try:
                raw = store.read_bytes(name)
            except FileNotFoundError:
                raise BuildError(f"--source {self.uri}: no such manifest object") from None
            base = parent + "/"
        else:
            path = loc.local_path().absolute()
            try:
                raw = path.read_bytes()
            except OSError as e:
                raise BuildError(
                    f"--source {self.uri}: cannot read the manifest ({e.strerror or e})"
                ) from None
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
                raise BuildError(
                    f"{where}: 'uri' must be a non-empty string (local path or s3://...), got {uri!r}"
                )
            if item_id in seen:
                raise BuildError(
                    f"{where}: duplicate id {item_id!r} (first on line {seen[item_id]}); ids must be unique"
                )
            seen[item_id] = lineno
            scheme = scheme_of(uri)
            if scheme not in ("", "file", "s3"):
                raise BuildError(f"{where}: unsupported uri {uri!r} (use a local path or s3://bucket/key)")
            if scheme == "s3":
                uri = "s3" + uri[2:]  # canonical scheme; the bucket and key are checked per item (_stat)
            else:
                try:  # a plain path is taken as is (a colon in a file name is not a scheme)
                    uri = os.path.expanduser(str(parse_uri(uri)) if scheme else uri)
                except ConfigError as e:
                    raise BuildError(f"{where}: {e.message}") from None
                if not os.path.isabs(uri):
                    uri = base + uri if is_s3(base) else os.path.join(base, uri)
                if not is_s3(uri):
                    uri = os.path.normpath(uri)
            metadata = {k: v for k, v in row.items() if k not in ("id", "uri")}
            items.append(SourceItem(id=item_id, uri=uri, metadata=metadata))
        _parallel(self._stat, items, self.workers)
        return items

    def _stat(self, item: SourceItem) -> None:
        if is_s3(item.uri):
            from handler.core.storage import NotFoundError

            try:
                loc = parse_uri(item.uri, check_s3_key=False)
                key = loc.key
                store = self._readers.store(loc.bucket)
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
        return self._readers.read(item, self.max_bytes)


def open_source(uri: str, workers: int = 8) -> Source:
    """A folder, ``s3://bucket/prefix`` (a key ending in ``.jsonl`` is a manifest) or a ``.jsonl`` file."""
    if not isinstance(uri, str) or not uri.strip():
        raise UsageError("--source is empty: pass a folder, an s3://bucket/prefix or a JSONL manifest")
    if scheme_of(uri) not in ("", "file", "s3"):
        raise UsageError(
            f"--source {uri!r}: unsupported scheme (use a folder, a .jsonl file or s3://bucket/prefix)"
        )
    try:
        loc = parse_uri(uri)
    except ConfigError as e:
        raise UsageError(f"--source: {e.message}") from None
    if loc.is_s3:
        if loc.key.endswith(".jsonl"):
            return JsonlSource(str(loc), workers)
        return S3Source(S3Store(loc.bucket, loc.key), workers)
    path = loc.local_path()
    if path.is_dir():
        return FolderSource(path)
    if path.is_file():
        return JsonlSource(str(path), workers)
    raise UsageError(f"--source {uri}: no such folder or manifest file")
