"""PIL replicas of the torchvision / open_clip geometry steps of open_clip's eval transform.

Resize output sizes (torchvision ``Resize``, open_clip ``ResizeKeepRatio``), center crop and constant pad
(torchvision ``CenterCrop`` / ``F.pad``, open_clip ``center_crop_or_pad``) on PIL images, with the same
rounding, so :class:`handler.core.preprocess.ImagePreprocessor` sees the pixels open_clip sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageOps

__all__ = ["center_crop_or_pad", "crop_box", "keep_ratio_size", "tv_resize_output_size"]


def tv_resize_output_size(h: int, w: int, size: Sequence[int]) -> tuple[int, int]:
    """torchvision ``_compute_resized_output_size`` (max_size=None): (new_h, new_w)."""
    if len(size) == 1:
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = size[0], int(size[0] * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        return new_h, new_w
    return size[0], size[1]


def keep_ratio_size(h: int, w: int, target: tuple[int, int], longest: float) -> tuple[int, int]:
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


def crop_box(h: int, w: int, crop_h: int, crop_w: int) -> tuple[int, int]:
    """(top, left) of torchvision's center crop of an image at least as large as the crop."""
    return round((h - crop_h) / 2.0), round((w - crop_w) / 2.0)


def center_crop_or_pad(img: Image.Image, out_hw: tuple[int, int], fill: int) -> Image.Image:
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
    top, left = crop_box(h, w, crop_h, crop_w)
    return img.crop((left, top, left + crop_w, top + crop_h))
