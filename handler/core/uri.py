"""The one parser of artifact and source locations: local paths, ``file://`` URIs and ``s3://bucket/key``.

Accepted: ``/abs/path``, ``relative/path``, ``~/path``; ``file:///abs/path`` and ``file://localhost/abs/path``
(percent-escapes decoded: ``file:///a%20b`` is ``/a b``); ``s3://bucket[/key]`` (the scheme is
case-insensitive, ``S3://b/k`` is ``s3://b/k``; S3 keys are literal, never unescaped). Anything else with a
scheme (``gs://x``, ``s3:/bucket``, ``http://...``) is a :class:`ConfigError` naming the value.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from handler.core.errors import ConfigError

__all__ = ["Location", "check_key", "is_s3", "parse_uri", "scheme_of"]

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_MISTYPED_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")  # "s3:/bucket", "gs:x": a mistyped URI, not a path
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$")


def check_key(key: str) -> str:
    """A relative POSIX key inside a store (``versions/abc/manifest.json``); ValueError otherwise."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid storage key {key!r}: must be a non-empty string")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid storage key {key!r}: must be a relative POSIX path")
    if any(p in ("", ".", "..") for p in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}: empty, '.' or '..' segment")
    return key


@dataclass(frozen=True)
class Location:
    """A parsed location. ``scheme`` is ``"file"`` or ``"s3"``; for files ``path`` is the local path (as
    given, ``~`` not expanded), for S3 ``bucket`` and ``key`` (no leading or trailing ``/``; may be empty)."""

    scheme: str
    path: str = ""
    bucket: str = ""
    key: str = ""

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    def local_path(self) -> Path:
        """The local path, ``~`` expanded (not made absolute). ValueError for an S3 location."""
        if self.is_s3:
            raise ValueError(f"{self} is not a local path")
        return Path(self.path).expanduser()

    def __str__(self) -> str:
        if self.is_s3:
            return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"
        return self.path


def parse_uri(uri: str | os.PathLike[str], *, check_s3_key: bool = True) -> Location:
    """Parse a location (see the module docstring); :class:`ConfigError` naming the value if malformed.

    ``check_s3_key=False`` skips the key rules (no empty, ``.`` or ``..`` segments) for callers that report
    a bad key per item instead of failing.
    """
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError(f"invalid storage URI {uri!r}: empty")
    if "\x00" in uri:
        raise ConfigError(f"invalid storage URI {uri!r}: NUL byte")
    match = _SCHEME_RE.match(uri)
    if match is None:
        if _MISTYPED_RE.match(uri):
            raise ConfigError(
                f"invalid storage URI {uri!r}: unsupported scheme (use a path, file:// or s3://)"
            )
        return Location("file", path=uri)
    scheme = match.group(1).lower()
    parts = urlsplit(uri)
    if parts.query or parts.fragment:
        raise ConfigError(f"invalid storage URI {uri!r}: query strings and fragments are not allowed")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"invalid storage URI {uri!r}: file:// URIs must name a local absolute path")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ConfigError(f"invalid storage URI {uri!r}: file:// URIs must name an absolute path")
        if "\x00" in path:
            raise ConfigError(f"invalid storage URI {uri!r}: NUL byte")
        return Location("file", path=path)
    if scheme == "s3":
        bucket = parts.netloc
        if not bucket:
            raise ConfigError(f"invalid storage URI {uri!r}: no bucket (expected s3://bucket/prefix)")
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise ConfigError(f"invalid storage URI {uri!r}: {bucket!r} is not a valid bucket name")
        key = parts.path.strip("/")
        if key and check_s3_key:
            try:
                check_key(key)
            except ValueError as e:
                raise ConfigError(f"invalid storage URI {uri!r}: bad prefix ({e})") from None
        return Location("s3", bucket=bucket, key=key)
    raise ConfigError(
        f"invalid storage URI {uri!r}: unsupported scheme {scheme!r} (use a path, file:// or s3://)"
    )


def scheme_of(uri: str | os.PathLike[str]) -> str:
    """The lower-case scheme of ``scheme://...``; ``""`` for anything else (a path), without validating."""
    m = _SCHEME_RE.match(uri) if isinstance(uri, str) else None
    return m.group(1).lower() if m else ""


def is_s3(uri: str | os.PathLike[str]) -> bool:
    """True for an ``s3://`` URI (any case), without validating the rest."""
    return scheme_of(uri) == "s3"
