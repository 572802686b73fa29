"""Synthetic test images for preprocessing tests: every PIL mode, photo-like JPEGs, EXIF, bombs."""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: info key of high-bit-depth samples: the 8-bit image they are a version of
EIGHT_BIT = "eight_bit_version"
MODES = ("RGB", "RGBA", "LA", "P", "PA", "L", "1", "I", "I;16", "F", "CMYK", "YCbCr")


def noise_rgb(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def photo_like(w: int, h: int, seed: int = 0) -> Image.Image:
    """Smooth colour fields + hard-edged shapes + a little sensor noise (JPEG-friendly, natural-ish)."""
    return _photo_like(w, h, seed).copy()


@functools.lru_cache(maxsize=64)
def _photo_like(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), "RGB").resize(
        (w, h), Image.BICUBIC
    )
    draw = ImageDraw.Draw(base)
    for _ in range(25):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = (
            x0 + int(rng.integers(w // 40 + 1, w // 4 + 2)),
            y0 + int(rng.integers(h // 40 + 1, h // 4 + 2)),
        )
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    for _ in range(10):
        pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(2)]
        draw.line(pts, fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=max(1, w // 400))
    base = base.filter(ImageFilter.GaussianBlur(radius=max(w, h) / 2000))
    arr = np.asarray(base, dtype=np.int16) + rng.normal(0, 3, (h, w, 3)).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def make_mode(mode: str, w: int, h: int, seed: int = 0) -> Image.Image:
    """A random image in ``mode`` (P with and without transparency via ``PA``-> P + transparency)."""
    rng = np.random.default_rng(seed)
    rgb = noise_rgb(w, h, seed) if w * h < 4096 else photo_like(w, h, seed)
    if mode == "RGB":
        return rgb
    if mode == "RGBA":
        alpha = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
        out = rgb.copy()
        out.putalpha(alpha)
        return out
    if mode == "LA":
        return make_mode("RGBA", w, h, seed).convert("LA")
    if mode == "P":
        return rgb.quantize(200, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    if mode == "PA":  # palette image with a transparent index (GIF/PNG style)
        p = rgb.quantize(200, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        p.info["transparency"] = 3
        return p
    if mode == "L":
        return rgb.convert("L")
    if mode == "1":
        return rgb.convert("L").convert("1")
    if mode in ("I", "I;16", "F"):
        # the high-bit-depth version of an 8-bit picture, kept in info[EIGHT_BIT]: what it must look like
        gray = rgb.convert("L")
        g = np.asarray(gray).astype(np.int64)
        if mode == "F":
            img = Image.fromarray((g / 255.0).astype(np.float32), "F")
        else:  # 16-bit levels g * 257 plus noise that rounds away (|r| <= 128)
            v = np.clip(g * 257 + rng.integers(-128, 129, g.shape), 0, 65535)
            img = (
                Image.fromarray(v.astype(np.uint16))
                if mode == "I;16"
                else Image.fromarray(v.astype(np.int32), "I")
            )
        assert img.mode == mode
        img.info[EIGHT_BIT] = gray
        return img
    if mode in ("CMYK", "YCbCr"):
        return rgb.convert(mode)
    raise ValueError(mode)


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def with_orientation(img: Image.Image, orientation: int, fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, fmt, exif=exif.tobytes())


def animated_gif(w: int = 40, h: int = 30, frames: int = 3) -> bytes:
    imgs = [Image.new("RGB", (w, h), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)][:frames]]
    return encode(imgs[0], "GIF", save_all=True, append_images=imgs[1:], duration=100, loop=0)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_header_only(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h (a decompression bomb header; the IDAT is tiny and wrong)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def png_zero_bomb(w: int, h: int) -> bytes:
    """A real, valid PNG of w x h black pixels: compresses ~1000:1 (a classic decompression bomb)."""
    row = b"\x00" + b"\x00" * (w * 3)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
