"""The decode workers: size cap before reading, warnings captured per item, no file content in messages."""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from handler.core.preprocess import ImagePreprocessor
from index_builder.pipeline import prepare, prepared_stream, safe_message
from index_builder.sources import FolderSource, SourceItem

PRE = ImagePreprocessor({"size": 32})


def _jpeg_with_bad_exif(colour: tuple[int, int, int]) -> bytes:
    """A valid JPEG whose EXIF names a tag beyond its data: Pillow warns (UserWarning) when reading it."""
    ifd = (
        b"II*\x00"
        + struct.pack("<IH", 8, 1)
        + struct.pack("<HHII", 0x010E, 2, 100, 1000)
        + struct.pack("<I", 0)
    )
    out = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(out, "JPEG", exif=b"Exif\x00\x00" + ifd)
    return out.getvalue()


class _NoRead(FolderSource):
    def read(self, item: SourceItem) -> bytes:
        raise AssertionError(f"{item.id} was read")


def test_file_over_max_bytes_is_not_read(tmp_path: Path) -> None:
    """Issue 11 #4: the size known from the listing is checked before reading."""
    (tmp_path / "huge.jpg").write_bytes(b"\0" * 5000)
    source = _NoRead(tmp_path)
    [item] = source.list()
    source.max_bytes = 4096
    p = prepare(0, item, source, PRE, lambda sha: None)
    assert p.error == ("file_too_large", "5000 bytes, over --max-file-bytes 4096") and p.sha256 is None


def test_file_grown_past_max_bytes_while_listed_small(tmp_path: Path) -> None:
    (tmp_path / "grows.jpg").write_bytes(b"\0" * 10)
    source = FolderSource(tmp_path)
    [item] = source.list()
    (tmp_path / "grows.jpg").write_bytes(b"\0" * 5000)  # after the listing
    source.max_bytes = 4096
    p = prepare(0, item, source, PRE, lambda sha: None)
    assert p.error is not None and p.error[0] == "file_too_large"


def test_error_messages_never_quote_file_content(tmp_path: Path) -> None:
    """Issue 11 #20: errors.jsonl and the CLI quoted an undecodable file's first bytes (b'root:x:0')."""
    (tmp_path / "passwd.jpg").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    source = FolderSource(tmp_path)
    [item] = source.list()
    p = prepare(0, item, source, PRE, lambda sha: None)
    assert p.error is not None and p.error[0] == "not_an_image"
    assert "root" not in p.error[1] and "upload" not in p.error[1]
    assert (
        safe_message("corrupt: b'root:x:0' and b\"\\x89PNG\" (Bob's b'x')")
        == "corrupt: b'...' and b'...' (Bob's b'...')"
    )


def test_warnings_are_recorded_per_item_from_worker_threads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 11 #16: Pillow warnings were printed without the file name (and only once per warning line)."""
    for i in range(12):
        data = _jpeg_with_bad_exif((20 * i, 0, 0)) if i % 3 == 0 else _plain_jpeg(i)
        (tmp_path / f"img_{i:02d}.jpg").write_bytes(data)
    source = FolderSource(tmp_path)
    items = source.list()
    with warnings.catch_warnings(record=True) as outside:
        warnings.simplefilter("default")
        results = list(prepared_stream(items, source, PRE, lambda sha: None, workers=4, ahead=8))
    by_id: dict[Any, list[str] | None] = {items[p.position].id: p.warnings for p in results}
    assert all(p.error is None for p in results)
    for i in range(12):
        got = by_id[f"img_{i:02d}.jpg"]
        if i % 3 == 0:
            assert got and any("Tag data larger than file" in w for w in got), (i, got)
        else:
            assert got is None, (i, got)
    assert not [w for w in outside if "Tag data" in str(w.message)]  # none escaped unattributed
    assert "Tag data" not in capsys.readouterr().err
    # the hook is gone afterwards: warnings behave as before
    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter("always")
        warnings.warn("plain", UserWarning, stacklevel=1)
    assert [str(w.message) for w in after] == ["plain"]


def _plain_jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (0, seed * 10, 0)).save(out, "JPEG")
    return out.getvalue()


@pytest.mark.parametrize(("ext", "fmt"), [("avif", "AVIF"), ("ico", "ICO")])
def test_avif_and_ico_are_indexed(tmp_path: Path, ext: str, fmt: str) -> None:
    """Issue 11 #15: formats Pillow decodes here were silently ignored by extension."""
    Image.new("RGB", (48, 48), (200, 30, 30)).save(tmp_path / f"pic.{ext}", fmt)
    source = FolderSource(tmp_path)
    [item] = source.list()
    p = prepare(0, item, source, PRE, lambda sha: None)
    assert p.error is None and p.pixels is not None and p.pixels.shape == (3, 32, 32)
    assert (p.width, p.height) == (48, 48)
