"""handler.media directly: raster sniffing, result URLs and public URIs, which local files are served,
and the thumbnail cache."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from handler.core.errors import ImageTooLargeError, InvalidImageError
from handler.media import ImageLocator, LocalImage, ThumbnailCache, item_id_path, sniff_raster
from tests.handler.conftest import render_png


def png(tmp: Path, name: str, mode: str = "RGB", size: tuple[int, int] = (40, 30)) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, (255, 0, 0, 128) if mode == "RGBA" else "red").save(path, format="PNG")
    return path


def local(path: Path) -> LocalImage:
    st = path.stat()
    return LocalImage(path, "image/png", st.st_size, st.st_mtime_ns)


def test_sniff_raster_trusts_bytes_not_names() -> None:
    assert sniff_raster(render_png("red", "circle")[:16]) == "image/png"
    assert sniff_raster(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff_raster(b"GIF89a") == "image/gif"
    assert sniff_raster(b"RIFF\x00\x00\x00\x00WEBP") == "image/webp"
    assert (
        sniff_raster(b"<svg xmlns=...") is None
        and sniff_raster(b"<html>") is None
        and sniff_raster(b"") is None
    )


def test_item_id_path_escapes_but_keeps_slashes() -> None:
    assert item_id_path("a b/c?d#e") == "a%20b/c%3Fd%23e" and item_id_path(12) == "12"


def test_urls_and_public_uris(tmp_path: Path) -> None:
    root = tmp_path / "images"
    img = png(root, "sub/a b.png")
    loc = ImageLocator(str(root), None)
    item = {"id": "sub/a b.png", "uri": str(img)}
    assert loc.urls(item, "/prod") == (
        "/prod/items/sub/a%20b.png/image",
        "/prod/items/sub/a%20b.png/thumbnail",
    )
    assert loc.public_uri(item) == "sub/a b.png"  # never the server path
    assert loc.public_uri({"uri": "file://" + str(img)}) == "sub/a b.png"
    assert loc.public_uri({"uri": "https://x.example/i.png"}) == "https://x.example/i.png"
    assert loc.urls({"id": 1, "uri": "https://x.example/i.png"}) == ("https://x.example/i.png",) * 2
    assert loc.public_uri({"uri": "/etc/passwd"}) is None and loc.public_uri({"uri": "../x.png"}) is None
    assert loc.public_uri({"uri": "ftp://h/x"}) is None and loc.public_uri({"uri": 5}) is None
    s3 = ImageLocator("s3://bucket/photos/", None)
    assert s3.public_uri({"uri": "s3://bucket/photos/a/b.jpg"}) == "a/b.jpg"
    assert s3.public_uri({"uri": "s3://other/a.jpg"}) is None  # no bucket names of other prefixes
    assert (
        ImageLocator("s3://bucket/photos/list.jsonl", None).public_uri({"uri": "s3://bucket/photos/x.jpg"})
        == "x.jpg"
    )


def test_local_files_stay_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "images"
    img = png(root, "a.png")
    outside = png(tmp_path, "secret.png")
    (root / "link.png").symlink_to(outside)
    (root / "fake.png").write_text("<svg/>")
    os.mkfifo(root / "fifo.png")
    loc = ImageLocator(str(root), None)
    found = loc.local_file({"uri": "a.png"})
    assert found is not None and found.path == img.resolve() and found.media_type == "image/png"
    assert found.etag == f'"{found.size:x}-{found.mtime_ns:x}"'
    for uri in (
        "link.png",
        "../secret.png",
        str(outside),
        "fake.png",
        "fifo.png",
        "missing.png",
        "a\x00.png",
        "s3://b/a.png",
        "file://otherhost/" + str(img),
    ):
        assert loc.local_file({"uri": uri}) is None, uri
    assert ImageLocator(None, None).local_file({"uri": str(img)}) is None  # no root: nothing is served


def test_collection_root_re_roots_an_index_built_elsewhere(tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    img = png(moved, "x/a.png")
    loc = ImageLocator("/build/machine/images", str(moved))
    assert loc.local_file({"uri": "/build/machine/images/x/a.png"}).path == img.resolve()
    assert loc.local_file({"uri": "/elsewhere/x/a.png"}) is None
    manifest = tmp_path / "list.jsonl"  # a JSONL manifest source: its folder is the root
    manifest.write_text("")
    png(tmp_path, "b.png")
    assert ImageLocator(str(manifest), None).local_file({"uri": "b.png"}) is not None


def test_thumbnail_cache(tmp_path: Path) -> None:
    cache = ThumbnailCache(size=16, max_bytes=10**6)
    opaque = local(png(tmp_path, "o.png", size=(64, 32)))
    data, media = cache.get(opaque)
    assert media == "image/jpeg" and Image.open(io.BytesIO(data)).size == (16, 8)
    assert cache.get(opaque) == (data, media) and (cache.hits, cache.misses) == (1, 1)
    alpha = local(png(tmp_path, "t.png", "RGBA"))
    assert cache.get(alpha)[1] == "image/jpeg"  # composited over the index's background
    data, media = cache.get(alpha, None)  # no background: the alpha channel is kept
    assert media == "image/png" and Image.open(io.BytesIO(data)).mode in ("RGBA", "LA")
    assert len(cache) == 3


def test_thumbnail_cache_is_bounded_and_checks_pixels(tmp_path: Path) -> None:
    paths = [local(png(tmp_path, f"{i}.png", size=(64, 64))) for i in range(4)]
    one = len(ThumbnailCache(size=32).get(paths[0])[0])
    cache = ThumbnailCache(size=32, max_bytes=2 * one + one // 2)
    for p in paths:
        cache.get(p)
    assert len(cache) == 2  # least recently used dropped
    with pytest.raises(ImageTooLargeError):
        ThumbnailCache(max_pixels=100).get(paths[0])
    broken = tmp_path / "broken.png"
    broken.write_bytes(render_png("red", "circle")[:40])
    with pytest.raises(InvalidImageError):
        ThumbnailCache().get(local(broken))
