"""handler.core.crop_resize: torchvision / open_clip resize sizes, center crop and pad on PIL images
(parity with open_clip's whole transform is in test_preprocess.py)."""

from __future__ import annotations

from PIL import Image

from handler.core.crop_resize import center_crop_or_pad, crop_box, keep_ratio_size, tv_resize_output_size


def test_resize_sizes() -> None:
    assert tv_resize_output_size(100, 50, [224]) == (448, 224)  # shortest side to 224
    assert tv_resize_output_size(50, 100, [224]) == (224, 448)
    assert tv_resize_output_size(100, 50, [32, 48]) == (32, 48)
    assert keep_ratio_size(100, 50, (224, 224), longest=1.0) == (224, 112)
    assert keep_ratio_size(100, 50, (224, 224), longest=0.0) == (448, 224)
    # open_clip would ask for a 0-pixel side here and fail: clamped to 1
    assert keep_ratio_size(10, 10000, (224, 224), longest=1.0) == (1, 224)


def test_crop_box_rounds_like_torchvision() -> None:
    assert crop_box(10, 10, 4, 4) == (3, 3)
    assert crop_box(11, 10, 4, 5) == (4, 2)  # round(3.5) == 4, round(2.5) == 2 (banker's rounding)


def test_center_crop_or_pad() -> None:
    img = Image.new("RGB", (6, 2), (10, 20, 30))
    out = center_crop_or_pad(img, (4, 4), fill=7)
    assert out.size == (4, 4)
    assert out.getpixel((0, 0)) == (7, 7, 7) and out.getpixel((0, 1)) == (10, 20, 30)
    assert out.getpixel((0, 3)) == (7, 7, 7)


def test_pad_keeps_the_palette_of_a_p_image() -> None:
    img = Image.new("P", (2, 2), 1)
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    out = center_crop_or_pad(img, (4, 4), fill=2)
    assert out.mode == "P" and out.getpalette()[:9] == img.getpalette()[:9]
    assert out.getpixel((0, 0)) == 2 and out.getpixel((1, 1)) == 1  # fill is a palette index
