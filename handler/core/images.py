"""Decoding images safely: allowed formats, size and aspect limits checked on the header, EXIF orientation,
high bit depth to 8 bits, transparency over a background, and :class:`ImageOptions` (what an index records).
See :mod:`handler.core.preprocess` for the deviations from open_clip these implement."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import (  # explicit plugin imports: Image.open(formats=...) needs them registered
    AvifImagePlugin,  # noqa: F401
    BmpImagePlugin,  # noqa: F401
    GifImagePlugin,  # noqa: F401
    IcoImagePlugin,  # noqa: F401
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,  # noqa: F401
    MpoImagePlugin,  # noqa: F401
    PngImagePlugin,  # noqa: F401
    TiffImagePlugin,  # noqa: F401
    UnidentifiedImageError,
    WebPImagePlugin,  # noqa: F401
)

from handler.core.errors import ArtifactError, ImageAspectRatioError, ImageTooLargeError, InvalidImageError

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_RESIZE_PIXELS",
    "DRAFT_FACTOR",
    "LEGACY_OPTIONS",
    "MAX_ASPECT_RATIO",
    "ORIGINAL_SIZE",
    "WHITE",
    "ImageInput",
    "ImageOptions",
    "decode_image",
    "flatten",
    "format_background",
    "has_alpha",
    "image_size",
    "parse_background",
    "probe_image",
    "to_8bit",
]

ImageInput = bytes | bytearray | memoryview | str | os.PathLike | Image.Image

#: Formats ``decode_image`` accepts (multi-picture JPEGs open as "MPO" through the JPEG plugin).
ALLOWED_FORMATS = tuple(
    f for f in ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "ICO") if f in Image.OPEN
)
#: The one pixel limit (width * height from the header, checked before decoding) of the builder, the
#: service's queries and its thumbnails, so whatever the builder indexes the service can query and show.
DEFAULT_MAX_PIXELS = 50_000_000
#: Images whose long side is more than this many times the short side are refused before decoding
#: (decoding cost grows with the rows: a 1 x 40,000,000 PNG takes seconds; CLIP sees a sliver of it).
MAX_ASPECT_RATIO = 200
WHITE = (255, 255, 255)
#: ``img.info`` key set by :func:`decode_image` when a JPEG was decoded at reduced scale: its full size.
ORIGINAL_SIZE = "clip_search_original_size"
#: Largest intermediate resize (pixels) done exactly like open_clip; above, only the crop window is resampled.
DEFAULT_MAX_RESIZE_PIXELS = 2**26
#: With ``draft=True`` a JPEG is decoded at reduced scale but at least this many times the resize target.
DRAFT_FACTOR = 2

_INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
_RESIZE_MODES = ("shortest", "longest", "squash")
_EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


# --------------------------------------------------------------------------------------------- decoding


def _describe(data: Any) -> str:
    if isinstance(data, bytes | bytearray | memoryview):
        return f"{len(data)} bytes of image data"
    return repr(os.fspath(data)) if isinstance(data, str | os.PathLike) else type(data).__name__


def _open(data: ImageInput) -> Image.Image:
    """A lazily opened (header parsed, pixels not decoded) image of an allowed format."""
    if isinstance(data, Image.Image):
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    elif isinstance(data, str | os.PathLike):
        try:
            raw = Path(data).read_bytes()
        except OSError as e:
            raise InvalidImageError(f"cannot read image file {os.fspath(data)!r}: {e.strerror or e}") from e
    else:
        raise InvalidImageError(f"unsupported image input type {type(data).__name__}")
    if not raw:
        raise InvalidImageError("empty image data (0 bytes)")
    try:
        return Image.open(io.BytesIO(raw), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLargeError(f"image rejected as a decompression bomb: {e}") from e
    except UnidentifiedImageError as e:
        raise InvalidImageError(
            f"not a recognised image ({len(raw)} bytes); "  # never quote the content
            f"supported formats: {', '.join(ALLOWED_FORMATS)}"
        ) from e
    except MemoryError as e:
        raise ImageTooLargeError("image too large to open") from e
    except Exception as e:  # any parser error in the header: corrupt file
        raise InvalidImageError(f"corrupt or unsupported image header: {type(e).__name__}: {e}") from e


def _check_size(img: Image.Image, max_pixels: int | None, max_aspect: float | None) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise InvalidImageError(f"image has an empty size {w}x{h}")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLargeError(f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels} pixels")
    if max_aspect is not None and max(w, h) > max_aspect * min(w, h):
        raise ImageAspectRatioError(
            f"image is {w}x{h}: its long side is over {max_aspect:g} times its short side (the limit)"
        )


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
        return int(value) if value in (2, 3, 4, 5, 6, 7, 8) else 1
    except Exception:  # corrupt EXIF: ignore the orientation rather than reject the image
        return 1


def probe_image(
    data: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS, max_aspect: float | None = MAX_ASPECT_RATIO
) -> tuple[int, int]:
    """(width, height) from the header only (no pixel decoded), checked against the limits like
    :func:`decode_image` would. Raises ``InvalidImageError`` / ``ImageTooLargeError``."""
    img = _open(data)
    pending = isinstance(img, ImageFile.ImageFile) and bool(img.tile)
    _check_size(img, max_pixels if pending else None, max_aspect if pending else None)
    return img.size


def image_size(img: Image.Image) -> tuple[int, int]:
    """The full (displayed) size of an image from :func:`decode_image`, also when decoded at reduced scale."""
    size = img.info.get(ORIGINAL_SIZE)
    return (int(size[0]), int(size[1])) if isinstance(size, tuple) else img.size


def decode_image(
    data: ImageInput,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    *,
    max_aspect: float | None = MAX_ASPECT_RATIO,
    draft: Callable[[tuple[int, int]], tuple[int, int] | None] | None = None,
) -> Image.Image:
    """Decode bytes / a path / a PIL image into a fully loaded, EXIF-rotated, at most 8-bit PIL image.

    The pixel and aspect-ratio limits are checked on the header before any pixel is decoded (an already
    decoded PIL image is not checked again: the memory is spent, and callers may have used another limit).
    ``draft`` maps the displayed (w, h) to a minimum (w, h) for JPEG decode-time downscaling (the full size
    is then in ``img.info[ORIGINAL_SIZE]``, see :func:`image_size`). High bit depth is scaled to 8 bits
    (:func:`to_8bit`). Raises ``InvalidImageError`` (empty, unknown format, corrupt, truncated) or
    ``ImageTooLargeError``.
    """
    img = _open(data)
    try:
        pending = isinstance(img, ImageFile.ImageFile) and bool(img.tile)  # pixels not decoded yet
        _check_size(img, max_pixels if pending else None, max_aspect if pending else None)
        full = None
        if (
            pending
            and draft is not None
            and img.format in ("JPEG", "MPO")
            and not getattr(img, "decoderconfig", ())
        ):
            w, h = img.size
            swap = _orientation(img) in _SWAPPING_ORIENTATIONS
            want = draft((h, w) if swap else (w, h))
            if want is not None:
                want = (want[1], want[0]) if swap else want
                img.draft(None, (max(1, want[0]), max(1, want[1])))
                if img.size != (w, h):
                    full = (h, w) if swap else (w, h)
        img.load()
        if _orientation(img) != 1:
            img = ImageOps.exif_transpose(img)
        img = to_8bit(img)
        if full is not None:
            img.info[ORIGINAL_SIZE] = full
        return img
    except (InvalidImageError, ImageTooLargeError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLargeError(f"image rejected as a decompression bomb: {e}") from e
    except MemoryError as e:
        raise ImageTooLargeError(f"not enough memory to decode a {img.size[0]}x{img.size[1]} image") from e
    except Exception as e:
        msg = str(e)
        if "too large" in msg.lower():  # e.g. PNG text/ICC chunk decompression limits
            raise ImageTooLargeError(f"image rejected: {msg}") from e
        if "truncated" in msg.lower() or isinstance(e, EOFError):
            raise InvalidImageError(f"truncated image data ({_describe(data)}): {msg}") from e
        raise InvalidImageError(f"cannot decode image ({_describe(data)}): {type(e).__name__}: {msg}") from e


# ------------------------------------------------------------------------------- bit depth, transparency

_LUT16 = ((np.arange(65536, dtype=np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def to_8bit(img: Image.Image) -> Image.Image:
    """Scale high-bit-depth grayscale to 8-bit "L" by the value range (PIL's convert clips instead):

    * ``I;16`` family: 0..65535 -> 0..255 (rounded ``v / 257``: 8-bit data stored as ``v * 257`` comes back
      exactly);
    * ``I`` (32-bit int; what 16-bit PNGs decode to in older Pillow): taken as 16-bit, clipped to 0..65535;
    * ``F`` (float): no nominal range, so by the data: 0..1 if every value is in [0, 1], else 0..255 if in
      [0, 255], else stretched from its min..max; NaN counts as the minimum.

    A 16-bit transparent colour (PNG tRNS) becomes an alpha channel ("LA"). Other modes are returned as is.
    """
    mode = img.mode
    if not (mode.startswith("I;16") or mode in ("I", "F")):
        return img
    arr = np.asarray(img)
    if mode == "F":
        values = arr.astype(np.float64)
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            lo, scale = 0.0, 255.0
        elif lo >= 0.0 and hi <= 255.0:
            lo, scale = 0.0, 1.0
        else:
            scale = 255.0 / (hi - lo) if hi > lo else 0.0
        values = np.nan_to_num(values, nan=lo, posinf=hi, neginf=lo)
        out = np.clip(np.rint((values - lo) * scale), 0, 255).astype(np.uint8)
    else:
        out = _LUT16[np.clip(arr, 0, 65535).astype(np.uint16) if mode == "I" else arr.astype(np.uint16)]
    result = Image.fromarray(out, "L")
    key = img.info.get("transparency")
    if isinstance(key, int) and mode != "F":
        alpha = Image.fromarray(np.where(arr == key, 0, 255).astype(np.uint8), "L")
        result = Image.merge("LA", (result, alpha))
    result.info.update({k: v for k, v in img.info.items() if k != "transparency"})
    return result


def has_alpha(img: Image.Image) -> bool:
    """Whether the image can have transparent pixels (an alpha band or a transparent colour / index)."""
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def flatten(img: Image.Image, background: tuple[int, int, int] | None) -> Image.Image:
    """Composite a transparent image over ``background`` -> "RGB"; other images (or ``background=None``)
    are returned unchanged. Opaque pixels keep their exact colour."""
    if background is None or not has_alpha(img):
        return img
    rgba = img.convert("RGBA")
    out = Image.new("RGB", rgba.size, tuple(background))
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


_HEX = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")
_NAMED = {"white": WHITE, "black": (0, 0, 0)}


def parse_background(value: Any) -> tuple[int, int, int] | None:
    """A background colour from ``none``, ``white``, ``black``, ``#rrggbb`` / ``#rgb``, ``r,g,b`` or an
    ``[r, g, b]`` list; None means "drop alpha" (open_clip's behaviour). Raises ``ValueError``."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("none", "null"):
            return None
        if text in _NAMED:
            return _NAMED[text]
        match = _HEX.match(text)
        if match:
            digits = match.group(1)
            if len(digits) == 3:
                digits = "".join(c * 2 for c in digits)
            return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))
        value = [p.strip() for p in text.split(",")]
        try:
            value = [int(p) for p in value]
        except ValueError:
            raise ValueError(f"{text!r} is not a colour (none, white, black, #rrggbb or r,g,b)") from None
    if (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    ):
        return (int(value[0]), int(value[1]), int(value[2]))
    raise ValueError(f"{value!r} is not a colour (none, white, black, #rrggbb or three integers 0..255)")


def format_background(background: tuple[int, int, int] | None) -> str:
    return "none" if background is None else "#" + "".join(f"{c:02x}" for c in background)


@dataclass(frozen=True)
class ImageOptions:
    """Preprocessing choices that change vectors, recorded in the index manifest (``image_preprocess``)
    so that the service prepares queries, and renders thumbnails, the way the builder did."""

    background: tuple[int, int, int] | None = WHITE
    jpeg_draft: bool = True

    def to_manifest(self) -> dict[str, Any]:
        return {"background": format_background(self.background), "jpeg_draft": self.jpeg_draft}

    @classmethod
    def from_manifest(cls, value: Any) -> ImageOptions:
        """The manifest's ``image_preprocess`` (missing: :data:`LEGACY_OPTIONS`, how older builders
        prepared images). Raises ``ArtifactError`` when malformed."""
        if value is None:
            return LEGACY_OPTIONS
        try:
            if not isinstance(value, dict) or not isinstance(value.get("jpeg_draft"), bool):
                raise ValueError('expected {"background": ..., "jpeg_draft": true|false}')
            return cls(parse_background(value.get("background")), value["jpeg_draft"])
        except ValueError as e:
            raise ArtifactError(f"invalid image_preprocess {value!r} in the index manifest: {e}") from None


#: Indexes written before ``image_preprocess`` existed: alpha dropped, JPEGs decoded at full size.
LEGACY_OPTIONS = ImageOptions(background=None, jpeg_draft=False)
