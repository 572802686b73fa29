"""Torch-free image decoding and CLIP preprocessing (PIL + numpy) reproducing open_clip's eval transform.
Decoding and :class:`ImageOptions` live in :mod:`handler.core.images`.

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
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from handler.core.crop_resize import center_crop_or_pad, crop_box, keep_ratio_size, tv_resize_output_size
from handler.core.errors import ArtifactError, ImageTooLargeError, InvalidImageError
from handler.core.images import (
    _INTERPOLATIONS,
    _RESIZE_MODES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_RESIZE_PIXELS,
    DRAFT_FACTOR,
    MAX_ASPECT_RATIO,
    WHITE,
    ImageInput,
    ImageOptions,
    decode_image,
    flatten,
    parse_background,
)

__all__ = ["ImagePreprocessor"]

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
            raise ArtifactError(
                f"unsupported interpolation {interpolation!r} (one of {list(_INTERPOLATIONS)})"
            )
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
            new = keep_ratio_size(h, w, (H, W), longest=1.0)
            return new, self._resample, (H, W), self.fill_color
        if self.resize_mode == "squash":
            return (H, W), self._resample, (H, W), 0
        if H == W:
            return tv_resize_output_size(h, w, [H]), self._resample, (H, W), 0
        # open_clip: ResizeKeepRatio(image_size) with its default BICUBIC, whatever the configured mode
        return keep_ratio_size(h, w, (H, W), longest=0.0), Image.Resampling.BICUBIC, (H, W), 0

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
            top, left = crop_box(nh, nw, ch, cw)
            sx, sy = w / nw, h / nh
            box = (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)
            return flatten(img.resize((cw, ch), resample, box=box), self.background).convert("RGB")
        if (nh, nw) != (h, w):
            img = img.resize((nw, nh), resample)
        # Composite after the resize (cheap: the image is small now; premultiplied resizing commutes with
        # compositing up to rounding) and before padding, so padding is fill_color as for opaque images.
        img = flatten(img, self.background)
        img = center_crop_or_pad(img, (ch, cw), fill)
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
        return decode_image(
            image,
            self.max_pixels,
            max_aspect=self.max_aspect,
            draft=self._draft_request if self.draft else None,
        )

    def _run(self, image: ImageInput, out: np.ndarray | None = None) -> np.ndarray:
        img = self.load(image)
        try:
            rgb = self.transform_pil(img)
        except (InvalidImageError, ImageTooLargeError):
            raise
        except MemoryError as e:
            raise ImageTooLargeError(
                f"not enough memory to preprocess a {img.size[0]}x{img.size[1]} image"
            ) from e
        except Exception as e:
            raise InvalidImageError(
                f"cannot preprocess image (mode {img.mode}): {type(e).__name__}: {e}"
            ) from e
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
