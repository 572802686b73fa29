"""sha256 of a local file, streamed (bundle and index checksums, the builder's content hashes)."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_digest", "sha256_file"]

_CHUNK = 1 << 20


def file_digest(path: str | Path) -> tuple[str, int]:
    """``(sha256 hex, size in bytes)`` of a local file, streamed."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def sha256_file(path: str | Path) -> str:
    """The sha256 hex digest of a local file."""
    return file_digest(path)[0]
