"""One small storage abstraction over local directories and S3 prefixes, addressed by URI.

Accepted URIs (parsed by :mod:`handler.core.uri`): ``/abs/path``, ``relative/path`` (resolved against the
working directory), ``~/path``, ``file:///abs/path`` and ``s3://bucket[/prefix]``. Modules: ``base`` (the
interface, errors, key rules), ``local``, ``s3``, ``fetch`` (concurrent verified downloads, one object's
ranged GETs in ``ranged``) and ``verified`` (records of verified local files); this package re-exports
them, opens stores and fetches. Keys are relative POSIX paths inside the store
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

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from handler.core.hashing import file_digest
from handler.core.storage.base import (
    STALE_TMP_SECONDS,
    TMP_PREFIX,
    NotFoundError,
    ObjectInfo,
    StorageError,
    Store,
    TooLargeError,
    read_capped,
)
from handler.core.storage.fetch import FetchJob, fetch_files
from handler.core.storage.local import LocalStore, atomic_write
from handler.core.storage.s3 import S3Store, s3_client
from handler.core.storage.verified import RECORDS_DIR, VerifiedRecords, verify_file
from handler.core.uri import parse_uri

__all__ = [
    "RECORDS_DIR",
    "STALE_TMP_SECONDS",
    "TMP_PREFIX",
    "FetchJob",
    "LocalStore",
    "NotFoundError",
    "ObjectInfo",
    "S3Store",
    "StorageError",
    "Store",
    "TooLargeError",
    "VerifiedRecords",
    "atomic_write",
    "fetch_dir",
    "fetch_files",
    "file_digest",
    "open_store",
    "read_capped",
    "s3_client",
    "verify_file",
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
    records: VerifiedRecords | None = None,
) -> Path:
    """Materialise ``keys`` of a store into ``cache_dir`` (same relative layout) and return the directory
    holding them; blocking form of :func:`handler.core.storage.fetch.fetch_files`.

    Local stores are not copied: their root directory is returned as is (their files are not checked).
    For remote stores, ``expected`` maps a key to ``{"size": int, "sha256": hex}`` (either may be
    omitted): a cached file that matches is kept (trusted without hashing when ``records`` say it is
    unchanged since it was verified), anything else is downloaded (concurrent ranged GETs, sha256 while
    streaming) and checked; a mismatch raises
    :class:`ArtifactError` naming the file and leaves no file. Without an ``expected`` sha256 a key is
    always downloaded.
    """
    store = open_store(uri) if isinstance(uri, (str, os.PathLike)) else uri
    keys = list(keys)
    if isinstance(store, LocalStore):
        return store.root
    root = Path(cache_dir).expanduser().absolute()
    fetch_files(store, keys, root, expected=expected, records=records).wait()
    return root
