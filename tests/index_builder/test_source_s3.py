"""The S3 prefix source: odd keys are item errors, hidden keys and other extensions are counted."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from handler.core.storage import ObjectInfo, S3Store
from index_builder.source_s3 import S3Source


class _FakeS3(S3Store):
    """An S3 store whose listing holds keys S3 allows but a relative path cannot express."""

    def __init__(self, keys: list[str]):
        super().__init__("bucket", "photos")
        self.keys = keys

    def list(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[ObjectInfo]:
        now = datetime.now(UTC).timestamp()
        return iter([ObjectInfo(k, 3, now, "etag") for k in self.keys])

    def read_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        return b"{}"


def test_s3_keys_with_empty_dot_or_dotdot_segments_are_item_errors() -> None:
    """Issue 11 #9: ``photos/a//b.jpg`` raised ValueError in the listing and aborted every build."""
    keys = [
        "a//b.jpg",
        "a/./c.jpg",
        "a/../d.jpg",
        "ok.jpg",
        "ok.json",
        "a//b.json",
        "x/.hidden/e.jpg",
        "f.svg",
    ]
    source = S3Source(_FakeS3(keys))
    items = {it.id: it for it in source.list()}
    assert sorted(items) == ["a/../d.jpg", "a/./c.jpg", "a//b.jpg", "ok.jpg"]
    assert items["ok.jpg"].error is None and items["ok.jpg"].metadata == {}
    for key in ("a//b.jpg", "a/./c.jpg", "a/../d.jpg"):
        err = items[key].error
        assert err is not None and err[0] == "invalid_key" and key in err[1], err
        assert items[key].uri == f"s3://bucket/photos/{key}"
    assert dict(source.skipped) == {"hidden": 1, ".svg": 1}
