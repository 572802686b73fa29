"""The folder source: what is skipped (and counted), symlinks, sidecars, the file size cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from index_builder.errors import BuildError
from index_builder.source_base import FileTooLargeError
from index_builder.source_folder import FolderSource
from index_builder.sources import open_source


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


def test_folder_source_reads_sidecar_metadata_and_warns_on_bad_sidecars(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes(b"img-" + name.encode())
    (tmp_path / "a.json").write_text('{"caption": "red"}')
    (tmp_path / "b.json").write_text("[1, 2]")
    (tmp_path / "c.json").write_text("{not json")
    warned: list[str] = []
    source = FolderSource(tmp_path)
    source.warn = warned.append  # type: ignore[method-assign]
    items = {it.id: it for it in source.list()}
    assert items["a.jpg"].metadata == {"caption": "red"} and items["b.jpg"].metadata == {}
    assert items["a.jpg"].size == 9 and items["a.jpg"].mtime is not None
    assert sorted(w.split()[1].rsplit("/", 1)[-1] for w in warned) == ["b.json", "c.json"]
    assert source.read(items["c.jpg"]) == b"img-c.jpg"


def test_folder_source_that_cannot_be_listed_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="cannot list the folder"):
        FolderSource(tmp_path / "missing").list()
