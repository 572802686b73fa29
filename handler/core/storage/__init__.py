"""One small storage abstraction over local directories and S3 prefixes, addressed by URI.

Accepted URIs (parsed by :mod:`handler.core.uri`): ``/abs/path``, ``relative/path`` (resolved against the
working directory), ``~/path``, ``file:///abs/path`` and ``s3://bucket[/prefix]``. Modules: ``base`` (the
interface, errors, key rules), ``local``, ``s3``; this package re-exports them, opens stores and fetches.
Keys are relative POSIX paths inside the store
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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from handler.core.errors import ArtifactError
from handler.core.hashing import file_digest
from handler.core.storage.base import (
    STALE_TMP_SECONDS,
    TMP_PREFIX,
    NotFoundError,
    ObjectInfo,
    StorageError,
    Store,
    TooLargeError,
    _check_key,
    read_capped,
)
from handler.core.storage.local import LocalStore, atomic_write
from handler.core.storage.s3 import S3Store, s3_client
from handler.core.uri import parse_uri

__all__ = [
    "STALE_TMP_SECONDS",
    "TMP_PREFIX",
    "LocalStore",
    "NotFoundError",
    "ObjectInfo",
    "S3Store",
    "StorageError",
    "Store",
    "TooLargeError",
    "atomic_write",
    "fetch_dir",
    "file_digest",
    "open_store",
    "read_capped",
    "s3_client",
]


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
