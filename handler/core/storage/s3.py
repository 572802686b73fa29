"""An S3 prefix as a :class:`Store`, and the one boto3 client factory (boto3 imported lazily)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from handler.core.errors import ConfigError
from handler.core.storage.base import (
    TMP_PREFIX,
    NotFoundError,
    ObjectInfo,
    StorageError,
    Store,
    TooLargeError,
    _check_key,
    _check_prefix,
    read_capped,
)
from handler.core.storage.local import _file_mode

MAX_POOL_CONNECTIONS = 64  # >= the concurrent ranged GETs of handler.core.storage.fetch (default 10)


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
        raise ConfigError(
            f"AWS_MAX_ATTEMPTS must be an integer, got {os.environ['AWS_MAX_ATTEMPTS']!r}"
        ) from e
    config = Config(
        region_name=region,
        retries={
            "mode": os.environ.get("AWS_RETRY_MODE", "standard"),
            "total_max_attempts": max(1, attempts),
        },
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=MAX_POOL_CONNECTIONS,
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

    def read_range(self, key: str, start: int, end: int) -> tuple[bytes, int]:
        """Bytes ``[start, end)`` of the object and the object's total size (from Content-Range).
        ``start == end == 0`` reads the whole (expected empty) object without a Range header."""
        ranged = end > start
        args = {"Range": f"bytes={start}-{end - 1}"} if ranged else {}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **args)
            with contextlib.closing(response["Body"]) as body:
                data = body.read()
        except _aws_errors() as e:
            raise self._error(e, key, "read") from e
        content_range = response.get("ContentRange")
        if content_range:  # "bytes 0-99/1234"
            total = int(str(content_range).rsplit("/", 1)[1])
        elif ranged and start == 0 and len(data) == end:
            total = len(data)  # the server ignored a Range covering the whole object
        elif ranged:
            raise StorageError(f"cannot read {self.uri_for(key)}: the server ignored the Range header")
        else:
            total = len(data)
        return bytes(data), total

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
                        key=full[len(base) :],
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
            chunk = keys[i : i + batch]
            response = self._call(
                "delete",
                prefix,
                self.client.delete_objects,
                Bucket=self.bucket,
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
