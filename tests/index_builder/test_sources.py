"""Listing and reading sources: what is skipped (and counted), symlinks, odd S3 keys, the file size cap."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from handler.core.storage import ObjectInfo, S3Store
from index_builder.sources import FileTooLargeError, FolderSource, S3Source, open_source


def test_folder_listing_counts_what_it_skips(tmp_path: Path) -> None:
    """Issue 11 #15: files the lister ignores were never mentioned."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.png", "c.avif", "d.ico", "sub/e.JPG", "a.json"):  # a.json: a.jpg's sidecar
        (src / name).write_bytes(b"x")
    for name in (
        "logo.svg",
        "sub/icon.SVG",
        "photo.heic",
        "scan.ppm",
        "notes.txt",
        "README",
        "orphan.json",
        ".DS_Store",
        ".hidden.jpg",
    ):
        (src / name).write_bytes(b"x")
    (src / ".git").mkdir()
    (src / ".git" / "x.jpg").write_bytes(b"x")  # inside a hidden folder: the folder counts once
    source = FolderSource(src)
    ids = [it.id for it in source.list()]
    assert ids == ["a.jpg", "b.png", "c.avif", "d.ico", "sub/e.JPG"]
    assert dict(source.skipped) == {
        ".svg": 2,
        ".heic": 1,
        ".ppm": 1,
        ".txt": 1,
        "no extension": 1,
        ".json": 1,
        "hidden": 3,
    }


def test_symlinks_out_of_the_folder_are_not_followed(tmp_path: Path) -> None:
    """Issue 11 #20: passwd.jpg -> /etc/passwd was read (and its first bytes quoted)."""
    src, outside = tmp_path / "src", tmp_path / "outside"
    src.mkdir()
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"root:x:0:0")
    (outside / "meta.json").write_text('{"secret": 1}')
    (src / "real.jpg").write_bytes(b"y")
    (src / "passwd.jpg").symlink_to("/etc/passwd")
    (src / "secret.jpg").symlink_to(outside / "secret.jpg")
    (src / "inside.jpg").symlink_to(src / "real.jpg")  # a link within the folder is fine
    (src / "real.json").symlink_to(outside / "meta.json")  # a sidecar out of the folder: not read
    warnings: list[str] = []
    source = FolderSource(src)
    source.warn = warnings.append  # type: ignore[method-assign]
    items = {it.id: it for it in source.list()}
    assert items["passwd.jpg"].error is not None and items["passwd.jpg"].error[0] == "outside_root"
    assert items["secret.jpg"].error is not None and items["secret.jpg"].error[0] == "outside_root"
    assert "root:x" not in items["passwd.jpg"].error[1]
    assert items["inside.jpg"].error is None and source.read(items["inside.jpg"]) == b"y"
    assert items["real.jpg"].metadata == {} and any("real.json" in w for w in warnings)


def test_reads_stop_at_max_bytes(tmp_path: Path) -> None:
    """Issue 11 #4: a 3 GB file was read whole (3.26 GB RSS) before being found not to be an image."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.jpg").write_bytes(b"z" * 10_000)
    source = open_source(str(src))
    item = source.list()[0]
    source.max_bytes = 10_000
    assert len(source.read(item)) == 10_000
    source.max_bytes = 9_999
    with pytest.raises(FileTooLargeError, match="max-file-bytes 9999"):
        source.read(item)


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
