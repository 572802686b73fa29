"""Shared by the S3 tests of handler.core.storage.fetch / ranged: a bucket prefix and helpers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from handler.core.storage import S3Store, open_store

PART = 64 << 10


@pytest.fixture
def store(s3_server) -> S3Store:
    st = open_store(f"s3://{s3_server.make_bucket()}/remote")
    assert isinstance(st, S3Store)
    return st


def put(store: S3Store, key: str, data: bytes) -> dict[str, object]:
    """Upload ``data``; its expected size and sha256."""
    store.write_bytes(key, data)
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def leftovers(root: Path) -> list[str]:
    """Names of the files under ``root`` (temp files included), records aside."""
    return sorted(p.name for p in root.rglob("*") if p.is_file() and ".verified" not in p.parts)
