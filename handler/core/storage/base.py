"""The storage interface: :class:`Store`, its errors, :class:`ObjectInfo` and key rules."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handler.core.errors import ArtifactError
from handler.core.uri import check_key

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
        """The whole object. Missing: :class:`NotFoundError`; larger than ``max_bytes``:
        :class:`TooLargeError` (read no further than that)."""
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
