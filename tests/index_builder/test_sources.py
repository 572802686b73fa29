"""Listing and reading sources: what is skipped (and counted), symlinks, odd S3 keys, the file size cap."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from handler.core.storage import ObjectInfo, S3Store
from index_builder.sources import (
    BuildError,
    FileTooLargeError,
    FolderSource,
    JsonlSource,
    S3Source,
    UsageError,
    is_image_name,
    open_source,
    sidecar_name,
    skip_kind,
)


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


# -- each public function on its own ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", True),
        ("A.JPEG", True),
        ("x/y.webp", True),
        ("b.ico", True),
        ("c.avif", True),
        ("a.svg", False),
        ("a.json", False),
        ("jpg", False),
        ("a.jpg.txt", False),
    ],
)
def test_is_image_name(name: str, expected: bool) -> None:
    assert is_image_name(name) is expected


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        (".DS_Store", "hidden"),
        (".a.jpg", "hidden"),
        ("logo.SVG", ".svg"),
        ("README", "no extension"),
        ("trailing.", "no extension"),
        ("a.tar.gz", ".gz"),
    ],
)
def test_skip_kind(name: str, kind: str) -> None:
    assert skip_kind(name) == kind


@pytest.mark.parametrize(
    ("name", "sidecar"),
    [
        ("a.jpg", "a.json"),
        ("dir/b.png", "dir/b.json"),
        ("a.b.jpg", "a.b.json"),
        ("noext", "noext.json"),
        (".hidden", ".hidden.json"),
        ("a//b.jpg", "a//b.json"),
    ],
)
def test_sidecar_name(name: str, sidecar: str) -> None:
    assert sidecar_name(name) == sidecar


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


def test_jsonl_source_resolves_paths_keeps_metadata_and_stats(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"aaaa")
    (tmp_path / "b.jpg").write_bytes(b"bb")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "\n".join(
            [
                json.dumps({"id": "a", "uri": "imgs/a.jpg", "caption": "x"}),
                "",
                json.dumps({"id": 7, "uri": f"file://{tmp_path / 'b.jpg'}"}),
                json.dumps({"id": "gone", "uri": "nope.jpg"}),
            ]
        )
        + "\n"
    )
    source = JsonlSource(str(manifest), workers=2)
    a, b, gone = source.list()
    assert (a.id, a.uri, a.metadata, a.size) == ("a", str(tmp_path / "imgs" / "a.jpg"), {"caption": "x"}, 4)
    assert (b.id, b.uri, b.size, b.error) == (7, str(tmp_path / "b.jpg"), 2, None)
    assert gone.error is not None and gone.error[0] == "unreadable" and gone.size is None
    assert source.read(a) == b"aaaa"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1]", "expected a JSON object"),
        ('{"id": true, "uri": "a.jpg"}', "'id' must be"),
        ('{"id": "", "uri": "a.jpg"}', "'id' must be"),
        ('{"id": "a"}', "'uri' must be"),
        ('{"id": "a", "uri": "http://x/a.jpg"}', "unsupported uri"),
        (
            '{"id": "a", "uri": "a.jpg"}\n{"id": "a", "uri": "b.jpg"}',
            "duplicate id 'a' \\(first on line 1\\)",
        ),
    ],
)
def test_jsonl_source_rejects_bad_lines_naming_the_line(tmp_path: Path, line: str, message: str) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(line + "\n")
    with pytest.raises(BuildError, match=message) as info:
        JsonlSource(str(manifest)).list()
    assert f"{manifest} line " in str(info.value)


def test_jsonl_source_missing_or_binary_manifest(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="cannot read the manifest"):
        JsonlSource(str(tmp_path / "none.jsonl")).list()
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BuildError, match="not UTF-8"):
        JsonlSource(str(tmp_path / "bin.jsonl")).list()


def test_open_source_dispatches_on_the_uri(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text("")
    assert isinstance(open_source(str(tmp_path)), FolderSource)
    assert isinstance(open_source(f"file://{tmp_path}"), FolderSource)
    assert isinstance(open_source(str(tmp_path / "m.jsonl")), JsonlSource)
    assert isinstance(open_source("s3://bucket/photos/manifest.jsonl"), JsonlSource)
    for bad, message in (
        ("", "is empty"),
        ("  ", "is empty"),
        ("gs://b/p", "unsupported scheme"),
        (str(tmp_path / "missing"), "no such folder or manifest file"),
    ):
        with pytest.raises(UsageError, match=message) as info:
            open_source(bad)
        assert info.value.exit_code == 2
