"""One small storage abstraction over local directories and S3 prefixes, addressed by URI.

Accepted URIs: ``/abs/path``, ``relative/path`` (resolved against the working directory), ``~/path``,
``file:///abs/path`` and ``s3://bucket[/prefix]``. Keys are relative POSIX paths inside the store
(``versions/abc/manifest.json``); ``..``, empty segments and absolute keys are rejected.

Errors (all subclasses of :class:`handler.core.errors.ArtifactError`, so the service maps them to 503):

* :class:`NotFoundError` - the object does not exist. It is *also* a :class:`FileNotFoundError`, so
  ``except FileNotFoundError`` and ``except ArtifactError`` both catch it, for local and S3 stores alike.
* :class:`StorageError` - any other backend failure (permissions, network, S3 error codes), chained to
  the original exception.
* A malformed URI raises :class:`handler.core.errors.ConfigError` naming the value.

S3 is reached with boto3, imported lazily on first use of an ``s3://`` store. Configuration comes from the
standard environment: ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (custom endpoint, path-style
addressing), credentials through the normal boto3 chain, region ``AWS_REGION`` / ``AWS_DEFAULT_REGION``
(default ``us-east-1``), retries ``AWS_MAX_ATTEMPTS`` (default 5) / ``AWS_RETRY_MODE`` (default
``standard``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handler.core.errors import ArtifactError, ConfigError
from handler.core.hashing import file_digest
from handler.core.uri import check_key, parse_uri

__all__ = [
    "LocalStore",
    "NotFoundError",
    "ObjectInfo",
    "S3Store",
    "StorageError",
    "Store",
    "TooLargeError",
    "fetch_dir",
    "file_digest",
    "open_store",
    "read_capped",
    "s3_client",
]

TMP_PREFIX = ".tmp-"  # temp files of atomic local writes; hidden from listings
STALE_TMP_SECONDS = 3600.0  # a temp file untouched this long belongs to a killed writer
_CHUNK = 1 << 20


class StorageError(ArtifactError):
    """A storage backend failed (I/O error, permission, network, unexpected S3 error)."""


class NotFoundError(StorageError, FileNotFoundError):
    """The object does not exist. Both an ArtifactError and a FileNotFoundError."""

    def __init__(self, message: str, uri: str | None = None):
        StorageError.__init__(self, message)
        self.uri = uri


class TooLargeError(StorageError):
    """The object is larger than the ``max_bytes`` the reader allowed (nothing beyond it was read)."""


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a listing. ``key`` is relative to the store root; ``mtime`` is POSIX seconds;
    ``etag`` is the S3 ETag without quotes, None for local files."""

    key: str
    size: int
    mtime: float
    etag: str | None = None


def read_capped(f: Any, max_bytes: int | None, what: str) -> bytes:
    """Read a binary stream in chunks, raising :class:`TooLargeError` as soon as it exceeds ``max_bytes``."""
    if max_bytes is None:
        return bytes(f.read())
    buf = bytearray()
    while block := f.read(min(_CHUNK, max_bytes + 1 - len(buf))):
        buf += block
        if len(buf) > max_bytes:
            raise TooLargeError(f"{what} is larger than the limit of {max_bytes} bytes")
    return bytes(buf)


_check_key = check_key


def _check_prefix(prefix: str) -> str:
    """A listing prefix: '' or a key-like string that may end with '/'."""
    if prefix == "":
        return prefix
    _check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


class Store:
    """Interface shared by :class:`LocalStore` and :class:`S3Store`."""

    uri: str

    def read_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The whole object. Missing: :class:`NotFoundError`; larger than ``max_bytes``: :class:`TooLargeError`
        (read no further than that)."""
        raise NotImplementedError

    def write_bytes(self, key: str, data: bytes) -> None:
        """Create or replace the object atomically (readers see the old or the new content)."""
        raise NotImplementedError

    def upload_file(self, key: str, local_path: str | Path) -> None:
        """Copy a local file to ``key`` (atomic like write_bytes)."""
        raise NotImplementedError

    def download_file(self, key: str, local_path: str | Path) -> None:
        """Copy ``key`` to a local file atomically (temp file in the same directory, then rename)."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def list(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[ObjectInfo]:
        """All objects whose key starts with ``prefix`` (a string prefix, recursive), streamed.
        Local stores yield keys in sorted order; S3 yields the server's order (sorted on AWS, but some
        S3-compatible servers such as SeaweedFS list directory by directory) - sort if order matters.
        ``page_size`` sets the S3 page size (MaxKeys); ignored for local stores."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Delete one object; deleting a missing object is not an error."""
        raise NotImplementedError

    def delete_prefix(self, prefix: str, *, page_size: int | None = None) -> int:
        """Delete every object under ``prefix`` (must be non-empty); returns how many were deleted.
        ``page_size``: S3 listing page and delete batch size (ignored for local stores)."""
        raise NotImplementedError

    def uri_for(self, key: str) -> str:
        """A URI (local: absolute path; S3: ``s3://bucket/key``) naming the object (or a prefix ending
        in ``/``; ``""`` names the root), for messages."""
        raise NotImplementedError

    def local_path(self, key: str) -> Path | None:
        """The file backing ``key`` for local stores (may not exist); None for S3."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


class LocalStore(Store):
    """A directory. It need not exist yet: writes create it, reads of a missing root find nothing."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def uri_for(self, key: str) -> str:
        _check_prefix(key)
        return str(self.root / key) + ("/" if key.endswith("/") else "") if key else self.uri

    def read_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                return read_capped(f, max_bytes, str(path))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
            raise NotFoundError(f"no such object: {path}", str(path)) from e
        except OSError as e:
            raise StorageError(f"cannot read {path}: {e}") from e

    def _atomic_write(self, path: Path, writer: Any) -> None:
        try:
            atomic_write(path, writer, tmp_prefix=TMP_PREFIX)
        except OSError as e:
            raise StorageError(f"cannot write {path}: {e}") from e

    def write_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(self._path(key), lambda f: f.write(data))

    def upload_file(self, key: str, local_path: str | Path) -> None:
        src = Path(local_path)
        try:
            fsrc = open(src, "rb")  # noqa: SIM115 - closed below, after the atomic write
        except FileNotFoundError as e:
            raise NotFoundError(f"no such file: {src}", str(src)) from e
        with fsrc:
            self._atomic_write(self._path(key), lambda f: shutil.copyfileobj(fsrc, f, _CHUNK))

    def download_file(self, key: str, local_path: str | Path) -> None:
        src = self._path(key)
        try:
            fsrc = open(src, "rb")  # noqa: SIM115
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
            raise NotFoundError(f"no such object: {src}", str(src)) from e
        with fsrc:
            LocalStore(Path(local_path).parent)._atomic_write(
                Path(local_path).absolute(), lambda f: shutil.copyfileobj(fsrc, f, _CHUNK)
            )

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[ObjectInfo]:
        _check_prefix(prefix)
        # Walk from the deepest directory the prefix names, filter by the string prefix.
        base_rel = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        start = self.root / base_rel if base_rel else self.root
        yield from (o for o in self._walk(start, base_rel) if o.key.startswith(prefix))

    def _walk(self, directory: Path, rel: str, tmp: bool = False) -> Iterator[ObjectInfo]:
        """Objects under ``directory``; ``tmp``: also the temp files of atomic writes (for deleting)."""
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            raise StorageError(f"cannot list {directory}: {e}") from e
        # Sorting directories as "name/" gives the same order as sorting the full keys (S3 order).
        decorated = []
        for entry in entries:
            if entry.name.startswith(TMP_PREFIX) and not tmp:
                continue
            is_dir = entry.is_dir(follow_symlinks=True)
            decorated.append((entry.name + "/" if is_dir else entry.name, entry, is_dir))
        decorated.sort(key=lambda t: t[0])
        for _, entry, is_dir in decorated:
            if is_dir:
                yield from self._walk(Path(entry.path), f"{rel}{entry.name}/", tmp)
            elif entry.is_file(follow_symlinks=True):
                st = entry.stat(follow_symlinks=True)
                yield ObjectInfo(key=rel + entry.name, size=st.st_size, mtime=st.st_mtime, etag=None)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            raise StorageError(f"cannot delete {path}: {e}") from e
        self._remove_empty_dirs(path.parent)

    def delete_prefix(self, prefix: str, *, page_size: int | None = None) -> int:
        if not prefix:
            raise ValueError("delete_prefix needs a non-empty prefix")
        _check_prefix(prefix)
        base_rel = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        start = self.root / base_rel if base_rel else self.root
        # temp files of a killed writer under the prefix go too (else their directory is never removed)
        found = [o.key for o in self._walk(start, base_rel, tmp=True) if o.key.startswith(prefix)]
        keys = [k for k in found if not k.rsplit("/", 1)[-1].startswith(TMP_PREFIX)]
        dirs = set()
        for key in found:
            path = self.root / key
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as e:
                raise StorageError(f"cannot delete {path}: {e}") from e
            dirs.add(path.parent)
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            self._remove_empty_dirs(d)
        return len(keys)

    def remove_stale_temp(self, max_age: float = STALE_TMP_SECONDS) -> int:
        """Delete temp files of atomic writes (``.tmp-*``) untouched for ``max_age`` seconds - left by a
        writer that was killed - outside hidden folders (e.g. a build's ``.work``); returns how many."""
        import time

        cutoff = time.time() - max_age
        stale = [o.key for o in self._walk(self.root, "", tmp=True)
                 if o.key.rsplit("/", 1)[-1].startswith(TMP_PREFIX) and o.mtime < cutoff
                 and not any(p.startswith(".") for p in o.key.split("/")[:-1])]
        for key in stale:
            path = self.root / key
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._remove_empty_dirs(path.parent)
        return len(stale)

    def _remove_empty_dirs(self, directory: Path) -> None:
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


def atomic_write(path: Path, writer: Any, *, tmp_prefix: str = ".tmp-") -> None:
    """Write a file so readers see the old content or the new, never a part: temp file in the same
    directory, fsync, rename over `path`, fsync the directory. `writer(f)` writes to the binary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{tmp_prefix}{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _file_mode() -> int:
    """0666 less the process umask: the mode ``open()`` creates files with. The umask is read from /proc
    (``os.umask`` can only read it by setting it, process-wide, racing other threads' file creation)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def s3_client() -> Any:
    """The one boto3 S3 client factory, configured from the standard environment (boto3 imported here,
    lazily); SigV4, so it also signs presigned URLs (handler.media)."""
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    try:
        attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", "5"))
    except ValueError as e:
        raise ConfigError(f"AWS_MAX_ATTEMPTS must be an integer, got {os.environ['AWS_MAX_ATTEMPTS']!r}") from e
    config = Config(
        region_name=region,
        retries={"mode": os.environ.get("AWS_RETRY_MODE", "standard"), "total_max_attempts": max(1, attempts)},
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": "path"} if endpoint else None,
        signature_version="s3v4",
    )
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint, config=config)


def _aws_errors() -> tuple[type[Exception], ...]:
    """The exception types boto3 / botocore / s3transfer raise for failed requests."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError, Boto3Error)


def _client_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


_NOT_FOUND_CODES = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}


class S3Store(Store):
    """An S3 prefix. The client is created on first use and shared by threads (boto3 clients are)."""

    def __init__(self, bucket: str, prefix: str = ""):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = s3_client()
        return self._client

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_for(self, key: str) -> str:
        _check_prefix(key)
        if not key:
            return self.uri
        return f"s3://{self.bucket}/{self.prefix}/{key}" if self.prefix else f"s3://{self.bucket}/{key}"

    def _error(self, exc: Exception, key: str, action: str) -> StorageError:
        uri = self.uri_for(key) if key else self.uri
        code = _client_error_code(exc)
        if code in _NOT_FOUND_CODES:
            what = "no such bucket" if code == "NoSuchBucket" else "no such object"
            return NotFoundError(f"{what}: {uri}", uri)
        return StorageError(f"cannot {action} {uri}: {exc}")

    def _call(self, action: str, key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _aws_errors() as e:
            raise self._error(e, key, action) from e

    def read_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            with contextlib.closing(response["Body"]) as body:
                if max_bytes is not None and int(response.get("ContentLength") or 0) > max_bytes:
                    raise TooLargeError(f"{self.uri_for(key)} is larger than the limit of {max_bytes} bytes")
                return read_capped(body, max_bytes, self.uri_for(key))
        except _aws_errors() as e:
            raise self._error(e, key, "read") from e

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call("write", key, self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)

    def upload_file(self, key: str, local_path: str | Path) -> None:
        if not Path(local_path).is_file():
            raise NotFoundError(f"no such file: {local_path}", str(local_path))
        self._call("upload", key, self.client.upload_file, str(local_path), self.bucket, self._key(key))

    def download_file(self, key: str, local_path: str | Path) -> None:
        dest = Path(local_path).absolute()
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{dest.name}.", dir=dest.parent)
            os.fchmod(fd, _file_mode())
            os.close(fd)
        except OSError as e:
            raise StorageError(f"cannot write {dest}: {e}") from e
        try:
            self._call("download", key, self.client.download_file, self.bucket, self._key(key), tmp)
            os.replace(tmp, dest)
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(e, OSError) and not isinstance(e, StorageError):
                raise StorageError(f"cannot write {dest}: {e}") from e
            raise

    def exists(self, key: str) -> bool:
        try:
            self._call("stat", key, self.client.head_object, Bucket=self.bucket, Key=self._key(key))
        except NotFoundError:
            return False
        return True

    def list(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[ObjectInfo]:
        _check_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        config = {"PageSize": int(page_size)} if page_size else {}
        pages = paginator.paginate(Bucket=self.bucket, Prefix=base + prefix, PaginationConfig=config)
        try:
            for page in pages:
                for obj in page.get("Contents", ()):
                    full = obj["Key"]
                    if full.endswith("/") or not full.startswith(base):
                        continue  # directory markers
                    etag = obj.get("ETag")
                    yield ObjectInfo(
                        key=full[len(base):],
                        size=int(obj["Size"]),
                        mtime=obj["LastModified"].timestamp(),
                        etag=etag.strip('"') if etag else None,
                    )
        except _aws_errors() as e:
            if _client_error_code(e) == "NoSuchBucket":
                raise self._error(e, "", "list") from e
            raise StorageError(f"cannot list {self.uri}/{prefix}: {e}") from e

    def delete(self, key: str) -> None:
        try:
            self._call("delete", key, self.client.delete_object, Bucket=self.bucket, Key=self._key(key))
        except NotFoundError:
            return

    def delete_prefix(self, prefix: str, *, page_size: int | None = None) -> int:
        if not prefix:
            raise ValueError("delete_prefix needs a non-empty prefix")
        keys = [o.key for o in self.list(prefix, page_size=page_size)]
        batch = max(1, min(int(page_size or 1000), 1000))
        for i in range(0, len(keys), batch):
            chunk = keys[i:i + batch]
            response = self._call(
                "delete", prefix, self.client.delete_objects, Bucket=self.bucket,
                Delete={"Objects": [{"Key": self._key(k)} for k in chunk], "Quiet": True},
            )
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageError(
                    f"cannot delete {len(errors)} object(s) under {self.uri_for(prefix.rstrip('/'))}: "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )
        return len(keys)


def open_store(uri: str | os.PathLike[str]) -> Store:
    """A :class:`Store` for a local directory (path or ``file://`` URI) or an ``s3://bucket/prefix``."""
    loc = parse_uri(uri)
    return S3Store(loc.bucket, loc.key) if loc.is_s3 else LocalStore(loc.path)


def fetch_dir(
    uri: str | Store,
    cache_dir: str | Path,
    keys: Iterable[str],
    *,
    expected: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Materialise ``keys`` of a store into ``cache_dir`` (same relative layout) and return the directory
    holding them.

    Local stores are not copied: their root directory is returned as is. For remote stores, ``expected``
    maps a key to ``{"size": int, "sha256": hex}`` (either may be omitted): a cached file that matches is
    kept, anything else is (re)downloaded and then checked; a mismatch after download raises
    :class:`ArtifactError` naming the file. Without an ``expected`` entry a key is always downloaded.
    """
    store = open_store(uri) if isinstance(uri, (str, os.PathLike)) else uri
    keys = list(keys)
    if isinstance(store, LocalStore):
        return store.root
    root = Path(cache_dir).expanduser().absolute()
    expected = expected or {}
    for key in keys:
        dest = root / _check_key(key)
        want = expected.get(key)
        if want is not None and dest.is_file() and _matches(dest, want) is None:
            continue
        store.download_file(key, dest)
        if want is not None:
            problem = _matches(dest, want)
            if problem is not None:
                with contextlib.suppress(OSError):
                    dest.unlink()
                raise ArtifactError(f"{store.uri_for(key)}: {problem}")
    return root


def _matches(path: Path, want: Mapping[str, Any]) -> str | None:
    """None if the file matches ``want`` (size, sha256), else a description of the mismatch."""
    size = path.stat().st_size
    if want.get("size") is not None and size != int(want["size"]):
        return f"size {size} != expected {want['size']}"
    if want.get("sha256"):
        digest, _ = file_digest(path)
        if digest != want["sha256"]:
            return f"sha256 {digest} != expected {want['sha256']}"
    return None
