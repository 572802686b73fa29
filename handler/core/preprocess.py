"""Torch-free image decoding and CLIP preprocessing (PIL + numpy) reproducing open_clip's eval transform.

``ImagePreprocessor`` performs exactly the PIL calls of ``open_clip.transform.image_transform(...,
is_train=False)`` (torchvision ``Resize``/``CenterCrop`` on PIL images, ``ResizeKeepRatio``,
``CenterCropOrPad``, then ``convert("RGB")``, ``ToTensor``, ``Normalize``), in the same order and in the
image's own mode (resize happens *before* the RGB conversion), so the uint8 pixels are identical and the
float32 output matches to ~1e-7 (normalisation is a per-channel lookup table computed with the same
float32 operations as torch).

open_clip behaviour reproduced on purpose (the integrator should know):

* ``shortest`` with a non-square ``size`` resizes with ``ResizeKeepRatio`` and always BICUBIC, whatever
  ``interpolation`` says; ``shortest`` pads (only if needed) with 0, ``longest`` pads with ``fill_color``.
* Resizing happens in the decoded mode: "P" and "1" images are resized with NEAREST (PIL forces it);
  RGBA/LA are resized premultiplied; padding a "P" image uses palette index ``fill_color`` (not black).
* With ``background=None`` only: transparency is dropped by ``convert("RGB")`` (transparent pixels keep
  their stored colour, or come out black once premultiplied resizing has touched them).

Deviations (only where open_clip cannot run or would exhaust memory):

* ``longest`` on extreme aspect ratios (e.g. 10000x10 to 224) asks torchvision for a 0-pixel side and
  open_clip raises; here that side is clamped to 1 pixel.
* ``shortest`` on extreme aspect ratios makes open_clip build a huge intermediate image (10000x10 ->
  224000x224). Up to ``max_resize_pixels`` (default 2**26, i.e. aspect ratios up to ~1300:1 at 224) the
  exact path is used; above it only the crop window is resampled (PIL ``resize(box=...)``, which may
  run its two passes in the other order), differing from open_clip by ~1-2 uint8 levels on photos
  (cosine > 0.9999; more on pure noise).
* ``interpolation: nearest`` is not accepted by open_clip's ``image_transform``; it is implemented like
  torchvision ``Resize(interpolation=NEAREST)``.

Deliberate deviations from open_clip (they change what the model sees, for the better):

* High bit depth (modes ``I;16*``, ``I``, ``F``) is scaled to 8 bits (:func:`to_8bit`) where PIL's
  ``convert("RGB")`` clips (16-bit PNGs came out white, float TIFFs black): the result equals the
  8-bit version of the same picture.
* Transparency is composited over ``background`` (default white) right after the resize, before
  crop/pad (so padding stays ``fill_color``); an opaque RGBA image gives exactly the RGB result.
  ``background=None`` is open_clip's behaviour (alpha dropped), kept for indexes built before the
  setting existed. The index records its :class:`ImageOptions` so builder and service agree.
* ``draft=True`` (the default) lets libjpeg decode large JPEGs at 1/2, 1/4 or 1/8 scale, never below
  ``DRAFT_FACTOR`` (2) times the size the resize step needs, so the final resize still downsamples by at
  least 2x (smaller JPEGs and other formats are unaffected). On the preprocessed tensor vs the exact path,
  JPEGs 3000x2000 to 6000x4000: cosine >= 0.9999, mean abs diff <= 0.01; on embeddings of the demo bundle
  see docs/formats.md ("Image preprocessing"). Decode + preprocess is 4-8x faster (6000x4000:
  ~0.5-0.7 s -> ~0.09 s).

Limits checked on the header before decoding (bytes and paths, not already decoded PIL images):
``max_pixels`` (width x height, :data:`DEFAULT_MAX_PIXELS` everywhere: builder, service, thumbnails) and
``max_aspect`` (long side / short side, :data:`MAX_ASPECT_RATIO`: decoding cost grows with the number of
rows, a 1 x 40,000,000 PNG takes seconds).
"""

from __future__ import annotations

import copy
import io
import numbers
import os
import re
from collections.abc import Callable, Sequence
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
    "WHITE",
    "ImageInput",
    "ImageOptions",
    "ImagePreprocessor",
    "decode_image",
    "flatten",
    "format_background",
    "has_alpha",
    "image_size",
    "parse_background",
    "probe_image",
    "to_8bit",
]

ImageInput = bytes | bytearray | memoryview | str | os.PathLike[str] | Image.Image

#: Formats ``decode_image`` accepts (multi-picture JPEGs open as "MPO" through the JPEG plugin).
ALLOWED_FORMATS = tuple(f for f in ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "ICO")
                        if f in Image.OPEN)
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
            f"image is {w}x{h}: its long side is over {max_aspect:g} times its short side (the limit)")


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
        if pending and draft is not None and img.format in ("JPEG", "MPO") and not getattr(img, "decoderconfig", ()):
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
    if (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
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
                raise ValueError("expected {\"background\": ..., \"jpeg_draft\": true|false}")
            return cls(parse_background(value.get("background")), value["jpeg_draft"])
        except ValueError as e:
            raise ArtifactError(f"invalid image_preprocess {value!r} in the index manifest: {e}") from None


#: Indexes written before ``image_preprocess`` existed: alpha dropped, JPEGs decoded at full size.
LEGACY_OPTIONS = ImageOptions(background=None, jpeg_draft=False)


# --------------------------------------------------------------------- torchvision / open_clip replicas


def _tv_resize_output_size(h: int, w: int, size: Sequence[int]) -> tuple[int, int]:
    """torchvision ``_compute_resized_output_size`` (max_size=None): (new_h, new_w)."""
    if len(size) == 1:
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = size[0], int(size[0] * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        return new_h, new_w
    return size[0], size[1]


def _keep_ratio_size(h: int, w: int, target: tuple[int, int], longest: float) -> tuple[int, int]:
    """open_clip ``ResizeKeepRatio.get_params`` without randomness: (new_h, new_w)."""
    target_h, target_w = target
    ratio_h = h / target_h
    ratio_w = w / target_w
    ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
    new_h, new_w = (round(x * 1.0 / ratio) for x in (h, w))
    return max(1, new_h), max(1, new_w)  # open_clip would fail on 0 (extreme aspect, 'longest')


def _parse_fill(fill: int, img: Image.Image) -> Any:
    """torchvision ``_functional_pil._parse_fill`` for a scalar fill."""
    bands = len(img.getbands())
    value: Any = tuple([fill] * bands) if bands > 1 else fill
    if img.mode != "F":
        value = tuple(int(x) for x in value) if isinstance(value, tuple) else int(value)
    return value


def _pad(img: Image.Image, ltrb: tuple[int, int, int, int], fill: int) -> Image.Image:
    """torchvision ``F.pad`` (constant) on a PIL image."""
    opts = _parse_fill(fill, img)
    if img.mode == "P":
        palette = img.getpalette()
        out = ImageOps.expand(img, border=ltrb, fill=opts)
        out.putpalette(palette)  # type: ignore[arg-type]  # a "P" image has a palette
        return out
    return ImageOps.expand(img, border=ltrb, fill=opts)


def _crop_box(h: int, w: int, crop_h: int, crop_w: int) -> tuple[int, int]:
    """(top, left) of torchvision's center crop of an image at least as large as the crop."""
    return round((h - crop_h) / 2.0), round((w - crop_w) / 2.0)


def _center_crop_or_pad(img: Image.Image, out_hw: tuple[int, int], fill: int) -> Image.Image:
    """torchvision ``F.center_crop`` (fill=0) / open_clip ``center_crop_or_pad`` on a PIL image."""
    crop_h, crop_w = out_hw
    w, h = img.size
    if crop_w > w or crop_h > h:
        ltrb = (
            (crop_w - w) // 2 if crop_w > w else 0,
            (crop_h - h) // 2 if crop_h > h else 0,
            (crop_w - w + 1) // 2 if crop_w > w else 0,
            (crop_h - h + 1) // 2 if crop_h > h else 0,
        )
        img = _pad(img, ltrb, fill)
        w, h = img.size
        if crop_w == w and crop_h == h:
            return img
    top, left = _crop_box(h, w, crop_h, crop_w)
    return img.crop((left, top, left + crop_w, top + crop_h))


# ------------------------------------------------------------------------------------------ preprocessor


def _as_size(size: Any) -> tuple[int, int]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return int(size), int(size)
    if isinstance(size, Sequence) and not isinstance(size, str) and len(size) in (1, 2):
        vals = [int(v) for v in size if isinstance(v, numbers.Integral) and not isinstance(v, bool)]
        if len(vals) == len(size):
            return (vals[0], vals[-1])
    raise ArtifactError(f"invalid image size {size!r} (int or [height, width])")


def _as_triple(value: Any, name: str) -> np.ndarray:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = (value,) * 3
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"invalid image {name} {value!r}") from e
    if arr.shape != (3,) or not np.isfinite(arr).all():
        raise ArtifactError(f"invalid image {name} {value!r} (need 3 finite numbers)")
    return arr


class ImagePreprocessor:
    """Manifest ``image`` section -> callable turning an image into float32 ``[3, H, W]``."""

    def __init__(
        self,
        image_cfg: dict[str, Any],
        *,
        draft: bool = True,
        background: tuple[int, int, int] | None = WHITE,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_aspect: float | None = MAX_ASPECT_RATIO,
        max_resize_pixels: int = DEFAULT_MAX_RESIZE_PIXELS,
    ) -> None:
        if not isinstance(image_cfg, dict):
            raise ArtifactError("image config must be a mapping")
        self.size = _as_size(image_cfg.get("size", 224))
        if min(self.size) < 1:
            raise ArtifactError(f"invalid image size {self.size}")
        self.mean = _as_triple(image_cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), "mean")
        self.std = _as_triple(image_cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), "std")
        if (self.std == 0).any():
            raise ArtifactError(f"image std has a zero: {self.std.tolist()}")
        interpolation = image_cfg.get("interpolation") or "bicubic"
        if interpolation not in _INTERPOLATIONS:
            raise ArtifactError(f"unsupported interpolation {interpolation!r} (one of {list(_INTERPOLATIONS)})")
        self.interpolation = interpolation
        self._resample = _INTERPOLATIONS[interpolation]
        resize_mode = image_cfg.get("resize_mode") or "shortest"
        if resize_mode not in _RESIZE_MODES:
            raise ArtifactError(f"unsupported resize_mode {resize_mode!r} (one of {list(_RESIZE_MODES)})")
        self.resize_mode = resize_mode
        fill = image_cfg.get("fill_color", 0)
        if not isinstance(fill, numbers.Integral) or isinstance(fill, bool):
            raise ArtifactError(f"fill_color must be an integer, got {fill!r}")
        self.fill_color = int(fill)
        self.draft = bool(draft)
        try:
            self.background = parse_background(background)
        except ValueError as e:
            raise ArtifactError(f"invalid image background: {e}") from None
        self.max_pixels = max_pixels
        self.max_aspect = max_aspect
        self.max_resize_pixels = int(max_resize_pixels)
        # ToTensor (/255) + Normalize as a [3, 256] float32 table, same float32 ops as torch.
        levels = np.arange(256, dtype=np.float32) / np.float32(255)
        self._lut = ((levels[None, :] - self.mean[:, None]) / self.std[:, None]).astype(np.float32)
        self._lut_flat = self._lut.ravel()

    @classmethod
    def from_manifest(cls, image_section: dict[str, Any], **kwargs: Any) -> ImagePreprocessor:
        """Same as the constructor (kept for symmetry with ``ClipTokenizer.from_manifest``)."""
        return cls(image_section, **kwargs)

    @property
    def options(self) -> ImageOptions:
        return ImageOptions(self.background, self.draft)

    def with_options(self, options: ImageOptions) -> ImagePreprocessor:
        """A copy preparing images with ``options`` (background, JPEG draft); same geometry and limits."""
        if options == self.options:
            return self
        other = copy.copy(self)
        other.background, other.draft = options.background, options.jpeg_draft
        return other

    # -- geometry -------------------------------------------------------------------------------------

    def _plan(self, w: int, h: int) -> tuple[tuple[int, int], Image.Resampling, tuple[int, int], int]:
        """(resize target (h, w), resample filter, crop (h, w), pad fill) for a w x h input."""
        H, W = self.size
        if self.resize_mode == "longest":
            new = _keep_ratio_size(h, w, (H, W), longest=1.0)
            return new, self._resample, (H, W), self.fill_color
        if self.resize_mode == "squash":
            return (H, W), self._resample, (H, W), 0
        if H == W:
            return _tv_resize_output_size(h, w, [H]), self._resample, (H, W), 0
        # open_clip: ResizeKeepRatio(image_size) with its default BICUBIC, whatever the configured mode
        return _keep_ratio_size(h, w, (H, W), longest=0.0), Image.Resampling.BICUBIC, (H, W), 0

    def _draft_request(self, size: tuple[int, int]) -> tuple[int, int] | None:
        w, h = size
        (nh, nw), _, _, _ = self._plan(w, h)
        return (DRAFT_FACTOR * nw, DRAFT_FACTOR * nh)

    def transform_pil(self, img: Image.Image) -> Image.Image:
        """The PIL part of open_clip's eval transform: resize, (composite over the background,) crop/pad,
        convert("RGB")."""
        w, h = img.size
        (nh, nw), resample, (ch, cw), fill = self._plan(w, h)
        if self.resize_mode == "squash":
            if (nh, nw) != (h, w):
                img = img.resize((nw, nh), resample)
            return flatten(img, self.background).convert("RGB")
        if nw * nh > self.max_resize_pixels and nw >= cw and nh >= ch and (nh, nw) != (h, w):
            # Only the crop window of the (huge) resized image: same geometry, PIL box resampling.
            top, left = _crop_box(nh, nw, ch, cw)
            sx, sy = w / nw, h / nh
            box = (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)
            return flatten(img.resize((cw, ch), resample, box=box), self.background).convert("RGB")
        if (nh, nw) != (h, w):
            img = img.resize((nw, nh), resample)
        # Composite after the resize (cheap: the image is small now; premultiplied resizing commutes with
        # compositing up to rounding) and before padding, so padding is fill_color as for opaque images.
        img = flatten(img, self.background)
        img = _center_crop_or_pad(img, (ch, cw), fill)
        return img.convert("RGB")

    def to_array(self, rgb: Image.Image, out: np.ndarray | None = None) -> np.ndarray:
        """RGB PIL image -> normalised float32 [3, H, W] (ToTensor + Normalize)."""
        arr = np.asarray(rgb, dtype=np.uint8)
        idx = arr.transpose(2, 0, 1).astype(np.intp)
        idx += np.array([0, 256, 512], dtype=np.intp)[:, None, None]
        if out is None:
            looked_up: np.ndarray = self._lut_flat[idx]
            return looked_up
        np.take(self._lut_flat, idx, out=out)
        return out

    # -- public ---------------------------------------------------------------------------------------

    def load(self, image: ImageInput) -> Image.Image:
        """Decode (with this preprocessor's limits and draft setting)."""
        return decode_image(image, self.max_pixels, max_aspect=self.max_aspect,
                            draft=self._draft_request if self.draft else None)

    def _run(self, image: ImageInput, out: np.ndarray | None = None) -> np.ndarray:
        img = self.load(image)
        try:
            rgb = self.transform_pil(img)
        except (InvalidImageError, ImageTooLargeError):
            raise
        except MemoryError as e:
            raise ImageTooLargeError(f"not enough memory to preprocess a {img.size[0]}x{img.size[1]} image") from e
        except Exception as e:
            raise InvalidImageError(f"cannot preprocess image (mode {img.mode}): {type(e).__name__}: {e}") from e
        return self.to_array(rgb, out)

    def __call__(self, image: ImageInput) -> np.ndarray:
        """One image (bytes, path or PIL image) -> float32 [3, H, W]."""
        return self._run(image)

    def batch(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Several images -> float32 [n, 3, H, W] (raises on the first bad image)."""
        out = np.empty((len(images), 3, *self.size), dtype=np.float32)
        for i, image in enumerate(images):
            self._run(image, out[i])
        return out

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, *self.size)
