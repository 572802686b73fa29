"""The decode workers: size cap before reading, warnings captured per item, no file content in messages."""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from handler.core.errors import ImageTooLargeError, InvalidImageError
from handler.core.preprocess import ImagePreprocessor
from handler.core.storage import NotFoundError, StorageError
from index_builder.pipeline import classify, prepare, prepared_stream, safe_message
from index_builder.source_base import Source, SourceItem
from index_builder.source_folder import FolderSource
from index_builder.workdir import CachedVector

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


# -- each public function on its own ------------------------------------------------------------------------
def _png(size: tuple[int, int] = (20, 10)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


class _Bytes(Source):
    """An in-memory source: item.uri -> bytes, or the exception to raise on read."""

    def __init__(self, blobs: dict[str, bytes | BaseException]):
        self.uri, self.blobs, self.reads = "mem://", blobs, []

    def list(self) -> list[SourceItem]:
        return [SourceItem(id=k, uri=k) for k in self.blobs]

    def read(self, item: SourceItem) -> bytes:
        self.reads.append(item.uri)
        blob = self.blobs[item.uri]
        if isinstance(blob, BaseException):
            raise blob
        return blob


def test_safe_message_elides_quoted_bytes_only() -> None:
    assert safe_message("cannot identify b'root:x:0:0' in a.jpg") == "cannot identify b'...' in a.jpg"
    assert safe_message("header b\"\\x89PNG\\\"x\" then b'\\''") == "header b'...' then b'...'"
    assert safe_message("a.jpg: truncated (blob'x')") == "a.jpg: truncated (blob'x')"


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ImageTooLargeError("12000x12000 pixels"), "too_large"),
        (InvalidImageError("empty image data"), "empty"),
        (InvalidImageError("image file is truncated"), "truncated"),
        (InvalidImageError("not a recognised image format"), "not_an_image"),
        (InvalidImageError("broken PNG chunk"), "corrupt"),
        (MemoryError(), "too_large"),
        (ValueError("odd"), "corrupt"),
    ],
)
def test_classify_maps_each_failure_to_its_reason(exc: BaseException, reason: str) -> None:
    got, message = classify(exc)
    assert got == reason and message
    if isinstance(exc, ValueError):
        assert message == "ValueError: odd"


def test_prepare_hashes_decodes_and_records_the_full_size() -> None:
    data = _png((20, 10))
    source = _Bytes({"a.png": data})
    p = prepare(3, source.list()[0], source, PRE, lambda sha: None)
    assert (p.position, p.error, p.size) == (3, None, len(data))
    assert p.sha256 == hashlib.sha256(data).hexdigest()
    assert (p.width, p.height) == (20, 10) and p.pixels is not None and p.pixels.shape == (3, 32, 32)


def test_prepare_skips_decoding_when_the_content_is_known() -> None:
    data = _png()
    source = _Bytes({"a.png": data})
    hit = CachedVector(np.ones(4, np.float32), 20, 10)
    asked: list[str] = []

    class _NoDecode:
        max_pixels = None

        def load(self, data: bytes) -> Any:
            raise AssertionError("decoded although the vector is known")

    p = prepare(0, source.list()[0], source, _NoDecode(), lambda sha: asked.append(sha) or hit)
    assert asked == [hashlib.sha256(data).hexdigest()]
    assert p.cached is hit and p.pixels is None and (p.width, p.height) == (20, 10) and p.error is None


def test_prepare_decodes_a_known_content_again_when_over_the_pixel_limit() -> None:
    """A cached vector from a build with a larger pixel limit is not reused past this build's limit."""
    source = _Bytes({"a.png": _png((20, 10))})
    small = ImagePreprocessor({"size": 32}, max_pixels=100)
    p = prepare(0, source.list()[0], source, small, lambda sha: CachedVector(np.ones(4), 20, 10))
    assert p.cached is None and p.error is not None and p.error[0] == "too_large"


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", "empty"),
        (b"not an image at all", "not_an_image"),
        (NotFoundError("gone"), "unreadable"),
        (PermissionError(13, "Permission denied"), "unreadable"),
    ],
)
def test_prepare_turns_item_failures_into_errors(blob: bytes | BaseException, reason: str) -> None:
    source = _Bytes({"a.png": blob})
    p = prepare(0, source.list()[0], source, PRE, lambda sha: None)
    assert p.error is not None and p.error[0] == reason and p.pixels is None


def test_prepare_lets_a_failing_storage_stop_the_build() -> None:
    source = _Bytes({"a.png": StorageError("connection reset")})
    with pytest.raises(StorageError, match="connection reset"):
        prepare(0, source.list()[0], source, PRE, lambda sha: None)


@pytest.mark.parametrize("workers", [1, 3])
def test_prepared_stream_yields_in_source_order(workers: int) -> None:
    blobs: dict[str, bytes | BaseException] = {f"{i}.png": _png((10 + i, 10)) for i in range(9)}
    blobs["4.png"] = b""
    source = _Bytes(blobs)
    out = list(prepared_stream(source.list(), source, PRE, lambda sha: None, workers=workers, ahead=2))
    assert [p.position for p in out] == list(range(9))
    assert [p.item.id for p in out] == list(blobs)
    assert [p.width for p in out] == [10 + i if i != 4 else None for i in range(9)]
    assert out[4].error == ("empty", "zero-byte file")


def test_prepared_stream_keeps_at_most_ahead_items_in_flight() -> None:
    source = _Bytes({f"{i}.png": _png() for i in range(10)})
    stream = prepared_stream(source.list(), source, PRE, lambda sha: None, workers=4, ahead=3)
    first = next(stream)
    assert first.position == 0
    assert len(source.reads) <= 4  # `ahead` submitted, plus the one queued when the first was taken
    stream.close()  # the rest is cancelled, not read
    assert len(source.reads) < 10
