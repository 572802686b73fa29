"""handler.core.preprocess: parity with open_clip's eval transform, decoding of every format,
hostile input."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from handler.core.errors import ArtifactError, ImageTooLargeError, InvalidImageError
from handler.core.images import ALLOWED_FORMATS, decode_image, has_alpha
from handler.core.preprocess import ImagePreprocessor
from tests.handler.img_samples import (
    EIGHT_BIT,
    MODES,
    animated_gif,
    encode,
    make_mode,
    noise_rgb,
    photo_like,
    png_header_only,
    png_zero_bomb,
    with_orientation,
)

open_clip = pytest.importorskip("open_clip")
from open_clip.transform import PreprocessCfg, image_transform, image_transform_v2  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _torch_single_thread():
    """torch's intra-op pool costs ~5 ms per tiny op on a busy 2-core box; the reference needs no threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
TOL = 1e-5


def cfg(
    size: int | tuple[int, int] = 224,
    interpolation: str = "bicubic",
    resize_mode: str = "shortest",
    fill_color: int = 0,
) -> dict:
    sz = [size, size] if isinstance(size, int) else list(size)
    return {
        "size": sz,
        "mean": list(MEAN),
        "std": list(STD),
        "interpolation": interpolation,
        "resize_mode": resize_mode,
        "fill_color": fill_color,
    }


def reference(c: dict):
    size = c["size"][0] if c["size"][0] == c["size"][1] else tuple(c["size"])
    return image_transform(
        size,
        is_train=False,
        mean=tuple(c["mean"]),
        std=tuple(c["std"]),
        resize_mode=c["resize_mode"],
        interpolation=c["interpolation"],
        fill_color=c["fill_color"],
    )


def assert_close(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert ours.dtype == np.float32, what
    assert ours.shape == tuple(ref.shape), (what, ours.shape, ref.shape)
    diff = float(np.abs(ours - np.asarray(ref)).max())
    assert diff <= TOL, f"{what}: max abs diff {diff}"


_CACHE: dict[str, tuple] = {}


def _trio(c: dict) -> tuple:
    key = repr(sorted(c.items()))
    if key not in _CACHE:
        _CACHE[key] = (reference(c), ImagePreprocessor(c), ImagePreprocessor(c, background=None))
    return _CACHE[key]


def check(img: Image.Image, c: dict, what: str) -> None:
    """Our output == open_clip's, with two deliberate deviations: high bit depth (I;16, I, F) is compared
    with open_clip on the 8-bit version of the same picture (open_clip clips it to white / black), and
    transparent images are compared on the ``background=None`` path (open_clip drops alpha; compositing
    is tested in test_transparency_*)."""
    ref_t, ours_t, legacy_t = _trio(c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL: "Palette images with Transparency ..." on convert
        ref = ref_t(img.info.get(EIGHT_BIT, img)).numpy()
        ours = (legacy_t if has_alpha(img) else ours_t)(img)
    assert_close(ours, ref, what)


# ------------------------------------------------------------------------------------------ parity

# smaller than the crop, exactly the crop (224 / 64 / 96x64), off-by-one, portrait, landscape, tiny
SMALL_SIZES = [(1, 1), (2, 3), (50, 30), (64, 64), (64, 96), (224, 224), (225, 224), (300, 200), (130, 333)]
LARGE_SIZES = [(640, 480), (1000, 1000), (480, 1280)]
SETTINGS = [
    (size, interp, mode)
    for size in (224, 64, (96, 64), (64, 128))
    for interp in ("bicubic", "bilinear")
    for mode in ("shortest", "longest", "squash")
]


@pytest.mark.parametrize("mode", MODES)
def test_parity_all_modes_sizes_settings(mode: str) -> None:
    for i, (w, h) in enumerate(SMALL_SIZES):
        img = make_mode(mode, w, h, seed=i)
        assert img.mode == ("P" if mode == "PA" else mode)
        for size, interp, rmode in SETTINGS:
            check(img, cfg(size, interp, rmode, fill_color=0), f"{mode} {w}x{h} {size} {interp} {rmode}")
    for i, (w, h) in enumerate(LARGE_SIZES):
        img = make_mode(mode, w, h, seed=i)
        for size, interp, rmode in SETTINGS[::4]:
            check(img, cfg(size, interp, rmode, fill_color=0), f"{mode} {w}x{h} {size} {interp} {rmode}")


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "LA", "I;16", "F"])
@pytest.mark.parametrize("fill", [0, 255, 7])
def test_parity_padding_fill(mode: str, fill: int) -> None:
    # 'longest' pads with fill_color (in the image's own mode: for P that is a palette index)
    for w, h in [(300, 100), (100, 300), (10, 10), (224, 50)]:
        img = make_mode(mode, w, h, seed=w)
        for size in (224, (96, 64)):
            check(img, cfg(size, "bicubic", "longest", fill), f"{mode} {w}x{h} fill={fill} {size}")


@pytest.mark.parametrize("wh", [(10000, 10), (10, 10000)])
def test_parity_extreme_aspect(wh: tuple[int, int]) -> None:
    w, h = wh
    for mode in MODES:
        img = make_mode(mode, w, h, seed=3)
        for rmode in ("shortest", "squash"):
            check(img, cfg(64, "bicubic", rmode), f"{mode} {w}x{h} 64 {rmode}")
    # at 224 open_clip resizes to 224000 x 224 first (50 M pixels): still the exact path by default
    for mode in ("RGB", "P"):
        check(make_mode(mode, w, h, seed=4), cfg(224, "bicubic", "shortest"), f"{mode} {w}x{h} 224")
    check(make_mode("L", w, h), cfg(224, "bilinear", "squash"), f"L {w}x{h} squash")


@settings(max_examples=250, deadline=None, database=None, derandomize=True)
@given(
    w=st.integers(1, 400),
    h=st.integers(1, 400),
    th=st.integers(1, 300),
    tw=st.integers(1, 300),
    square=st.booleans(),
    mode=st.sampled_from(["RGB", "RGBA", "P", "L", "LA", "I;16", "F", "1"]),
    interp=st.sampled_from(["bicubic", "bilinear"]),
    rmode=st.sampled_from(["shortest", "longest", "squash"]),
    fill=st.integers(0, 255),
)
def test_parity_random_geometry(
    w: int, h: int, th: int, tw: int, square: bool, mode: str, interp: str, rmode: str, fill: int
) -> None:
    size = th if square else (th, tw)
    img = make_mode(mode, w, h, seed=w * 1000 + h)
    c = cfg(size, interp, rmode, fill)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = reference(c)(img.info.get(EIGHT_BIT, img)).numpy()  # see check()
    except ValueError:  # open_clip's 0-pixel resize on extreme 'longest' aspect ratios
        assume(False)
    ours = ImagePreprocessor(c, background=None if has_alpha(img) else (255, 255, 255))(img)
    assert_close(ours, ref, f"{mode} {w}x{h} {size} {interp} {rmode} fill={fill}")


def test_longest_extreme_aspect_clamps_instead_of_crashing() -> None:
    img = noise_rgb(10000, 10)
    with pytest.raises(ValueError, match="must be > 0"):  # open_clip itself cannot handle this
        reference(cfg(224, "bicubic", "longest"))(img)
    out = ImagePreprocessor(cfg(224, "bicubic", "longest", fill_color=0))(img)
    assert out.shape == (3, 224, 224) and np.isfinite(out).all()


def test_parity_large_images() -> None:
    for mode, (w, h) in [
        ("RGB", (3000, 2000)),
        ("RGBA", (1500, 2500)),
        ("P", (2500, 1200)),
        ("L", (2049, 2047)),
    ]:
        img = make_mode(mode, w, h, seed=5)
        for rmode in ("shortest", "longest"):
            check(img, cfg(224, "bicubic", rmode), f"{mode} {w}x{h} {rmode}")


def test_parity_with_preprocess_cfg_v2() -> None:
    for pc in [
        PreprocessCfg(),
        PreprocessCfg(
            size=(96, 64),
            interpolation="bilinear",
            resize_mode="longest",
            fill_color=128,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        ),
    ]:
        size = list(pc.size) if isinstance(pc.size, tuple) else [pc.size, pc.size]
        section = {
            "size": size,
            "mean": list(pc.mean),
            "std": list(pc.std),
            "interpolation": pc.interpolation,
            "resize_mode": pc.resize_mode,
            "fill_color": pc.fill_color,
        }
        for w, h in [(640, 480), (50, 70)]:
            img = make_mode("RGB", w, h)
            assert_close(
                ImagePreprocessor(section)(img),
                image_transform_v2(pc, is_train=False)(img).numpy(),
                f"v2 {pc} {w}x{h}",
            )


def test_non_square_shortest_uses_bicubic_like_open_clip() -> None:
    img = make_mode("RGB", 640, 480)
    c = cfg((96, 64), "bilinear", "shortest")
    check(img, c, "non-square shortest bilinear")
    # ... which is the same as asking for bicubic: open_clip ignores `interpolation` there
    assert np.array_equal(ImagePreprocessor(c)(img), ImagePreprocessor(cfg((96, 64), "bicubic"))(img))


def test_nearest_matches_torchvision() -> None:
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

    for w, h in [(640, 480), (30, 50), (1, 1)]:
        img = make_mode("RGB", w, h)
        for rmode, ops in [
            ("shortest", [Resize(224, InterpolationMode.NEAREST), CenterCrop(224)]),
            ("squash", [Resize((224, 224), InterpolationMode.NEAREST)]),
        ]:
            ref = Compose([*ops, lambda im: im.convert("RGB"), ToTensor(), Normalize(MEAN, STD)])(img).numpy()
            assert_close(ImagePreprocessor(cfg(224, "nearest", rmode))(img), ref, f"nearest {rmode} {w}x{h}")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(orientation: int) -> None:
    img = photo_like(320, 200, seed=orientation)
    for fmt in ("JPEG", "PNG", "TIFF"):
        data = with_orientation(img, orientation, fmt)
        ref_img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        decoded = decode_image(data)
        expected_size = (200, 320) if orientation >= 5 else (320, 200)
        assert decoded.size == ref_img.size == expected_size, (fmt, orientation)
        assert np.array_equal(np.asarray(decoded), np.asarray(ref_img))
        for c in (cfg(224), cfg((96, 64), "bilinear", "longest")):
            ref = reference(c)(ref_img).numpy()
            assert_close(ImagePreprocessor(c, draft=False)(data), ref, f"{fmt} orientation {orientation}")


def test_output_layout_and_batch() -> None:
    pp = ImagePreprocessor(cfg(64))
    imgs = [make_mode("RGB", 80, 60, seed=s) for s in range(3)] + [encode(noise_rgb(70, 90), "PNG")]
    out = pp.batch(imgs)
    assert out.shape == (4, 3, 64, 64) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    for i, im in enumerate(imgs):
        assert np.array_equal(out[i], pp(im))
    assert pp.batch([]).shape == (0, 3, 64, 64)
    assert pp.input_shape == (3, 64, 64)
    assert ImagePreprocessor(cfg((96, 64)))(imgs[0]).shape == (3, 96, 64)


def test_manifest_section_from_docs() -> None:
    section = {
        "size": [224, 224],
        "mean": list(MEAN),
        "std": list(STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }
    pp = ImagePreprocessor.from_manifest(section)
    img = make_mode("RGB", 500, 375)
    assert_close(pp(img), reference(section)(img).numpy(), "docs manifest")


@pytest.mark.parametrize(
    "bad",
    [
        {"size": "224"},
        {"size": [0, 224]},
        {"size": [1, 2, 3]},
        {"mean": [0.5, 0.5]},
        {"std": [0.0, 1, 1]},
        {"interpolation": "lanczos"},
        {"resize_mode": "crop"},
        {"fill_color": [0, 0, 0]},
        {"mean": "abc"},
    ],
)
def test_invalid_config(bad: dict) -> None:
    with pytest.raises(ArtifactError):
        ImagePreprocessor({**cfg(), **bad})


# ------------------------------------------------------------------------------------------ decoding


def test_every_format_decodes() -> None:
    img = noise_rgb(120, 90, seed=1)
    assert set(ALLOWED_FORMATS) >= {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}
    lossless = {
        "PNG": {},
        "WEBP": {"lossless": True},
        "BMP": {},
        "TIFF": {},
        "TIFF-LZW": {"compression": "tiff_lzw"},
    }
    for name, kw in lossless.items():
        out = decode_image(encode(img, name.split("-")[0], **kw))
        assert out.size == (120, 90)
        assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(img)), name
    jpeg = decode_image(encode(img, "JPEG", quality=95))
    assert jpeg.size == (120, 90) and jpeg.mode == "RGB"
    gif = decode_image(animated_gif())
    assert gif.size == (40, 30)
    assert gif.convert("RGB").getpixel((5, 5)) == (255, 0, 0)  # first frame
    assert decode_image(encode(img, "WEBP", quality=80)).size == (120, 90)
    # multi-frame TIFF and a CMYK JPEG
    tiff = encode(img, "TIFF", save_all=True, append_images=[noise_rgb(120, 90, seed=2)])
    assert np.array_equal(np.asarray(decode_image(tiff)), np.asarray(img))
    assert decode_image(encode(img.convert("CMYK"), "JPEG")).mode == "CMYK"
    pp = ImagePreprocessor(cfg(64))
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"):
        assert pp(encode(img, fmt)).shape == (3, 64, 64)


def test_decode_sources(tmp_path: Path) -> None:
    data = encode(noise_rgb(30, 20), "PNG")
    p = tmp_path / "x.png"
    p.write_bytes(data)
    for src in (data, bytearray(data), memoryview(data), str(p), p, Image.open(io.BytesIO(data))):
        assert decode_image(src).size == (30, 20)
    with pytest.raises(InvalidImageError, match="cannot read image file"):
        decode_image(tmp_path / "missing.png")
    with pytest.raises(InvalidImageError, match="unsupported image input type"):
        decode_image(12345)  # type: ignore[arg-type]


def test_empty_and_garbage() -> None:
    with pytest.raises(InvalidImageError, match="empty image data"):
        decode_image(b"")
    for junk in (
        b"hello, this is not an image",
        b"\x00" * 100,
        b"%PDF-1.4\n",
        b"<svg xmlns='x'></svg>",
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"GIF89a",
        b"RIFF\x00\x00\x00\x00WEBP",
    ):
        with pytest.raises(InvalidImageError):
            decode_image(junk)
    with pytest.raises(InvalidImageError, match="not a recognised image"):
        decode_image(b"hello, this is not an image")


def test_disallowed_format_refused() -> None:
    data = encode(noise_rgb(20, 20), "PPM")
    assert Image.open(io.BytesIO(data)).size == (20, 20)  # PIL could read it
    with pytest.raises(InvalidImageError, match="supported formats"):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"])
def test_truncated(fmt: str) -> None:
    data = encode(photo_like(200, 150, seed=2), fmt)
    for cut in (len(data) // 2, len(data) // 3, 40):
        with pytest.raises(InvalidImageError):
            decode_image(data[:cut])
    pp = ImagePreprocessor(cfg(64))
    with pytest.raises(InvalidImageError):
        pp(data[: len(data) // 2])


def test_truncated_messages() -> None:
    for fmt in ("JPEG", "PNG"):
        data = encode(photo_like(200, 150, seed=2), fmt)
        with pytest.raises(InvalidImageError, match="truncated"):
            decode_image(data[: len(data) // 2])
    # a lazily opened PIL image given directly is loaded, so truncation is detected there too
    lazy = Image.open(io.BytesIO(encode(photo_like(200, 150), "JPEG")[:3000]))
    with pytest.raises(InvalidImageError, match="truncated"):
        decode_image(lazy)


def test_decompression_bomb_header() -> None:
    bomb = png_header_only(100_000, 100_000)
    assert len(bomb) < 200
    for limit in (50_000_000, None):
        with pytest.raises(ImageTooLargeError):
            decode_image(bomb, limit)
    with pytest.raises(ImageTooLargeError):
        ImagePreprocessor(cfg())(bomb)


def test_pixel_limit_checked_before_decoding() -> None:
    # header claims 5000x5000 but the pixel data is garbage: the size check must fire first
    with pytest.raises(ImageTooLargeError, match="25000000 pixels, over the limit of 1000000"):
        decode_image(png_header_only(5000, 5000), 1_000_000)
    with pytest.raises(InvalidImageError):
        decode_image(png_header_only(500, 500), 1_000_000)  # under the limit: decoding fails instead
    real = png_zero_bomb(2000, 2000)
    assert len(real) < 60_000
    with pytest.raises(ImageTooLargeError):
        decode_image(real, 3_999_999)
    assert decode_image(real, 4_000_000).size == (2000, 2000)
    with pytest.raises(ImageTooLargeError):
        ImagePreprocessor(cfg(), max_pixels=1_000_000)(real)


def test_pixel_limit_applies_to_undecoded_images_only() -> None:
    data = encode(noise_rgb(300, 200), "PNG")
    with pytest.raises(ImageTooLargeError):
        decode_image(Image.open(io.BytesIO(data)), 10_000)  # lazily opened: checked before decoding
    decoded = decode_image(data, 100_000)
    assert decode_image(decoded, 10_000) is decoded  # already decoded (e.g. by the caller): no re-check
    assert ImagePreprocessor(cfg(64), max_pixels=10_000)(decoded).shape == (3, 64, 64)


def test_bomb_warning_as_error_is_mapped() -> None:
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None
    side = int((limit * 1.5) ** 0.5)  # between MAX_IMAGE_PIXELS and 2x: PIL only warns
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageTooLargeError, match="decompression bomb"):
            decode_image(png_header_only(side, side), None)


def test_fuzzed_bytes_only_raise_our_errors() -> None:
    rng = np.random.default_rng(0)
    pp = ImagePreprocessor(cfg(32))
    src = photo_like(64, 48, seed=9)
    seeds = [encode(src, f) for f in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")]
    seeds += [with_orientation(src, 6), animated_gif()]
    outcomes = {"ok": 0, "invalid": 0, "too_large": 0}
    for i in range(600):
        data = bytearray(seeds[i % len(seeds)])
        for _ in range(int(rng.integers(1, 8))):
            pos = int(rng.integers(0, len(data)))
            if rng.random() < 0.7:
                data[pos] = int(rng.integers(0, 256))
            elif rng.random() < 0.5:
                del data[pos : pos + int(rng.integers(1, 50))]
            else:
                data[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 20)), dtype=np.uint8).tobytes()
        try:
            out = pp(bytes(data))
            assert out.shape == (3, 32, 32) and np.isfinite(out).all()
            outcomes["ok"] += 1
        except ImageTooLargeError:
            outcomes["too_large"] += 1
        except InvalidImageError:
            outcomes["invalid"] += 1
    assert outcomes["invalid"] > 50 and outcomes["ok"] > 50, outcomes


# ------------------------------------------------------------------------------ draft / region path


def test_draft_mode_close() -> None:
    exact = ImagePreprocessor(cfg(224), draft=False)
    drafted = ImagePreprocessor(cfg(224))  # the default
    for w, h, orientation in [(3000, 2000, 1), (2000, 3000, 6), (1000, 800, 1)]:
        data = with_orientation(photo_like(w, h, seed=w), orientation)
        a, b = exact(data), drafted(data)
        cos = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
        assert cos > 0.9999 and float(np.abs(a - b).mean()) < 0.01, (w, h, cos)
        loaded = drafted.load(data)
        # decoded at reduced scale, but never below 2x the resize target; orientation still applied
        assert min(loaded.size) >= 2 * 224
        assert (loaded.size[0] > loaded.size[1]) == (
            (h if orientation >= 5 else w) > (w if orientation >= 5 else h)
        )
        if (w, h) == (3000, 2000):
            assert loaded.size == (750, 500)
    png = encode(photo_like(1200, 900), "PNG")  # not a JPEG: draft is a no-op
    assert np.array_equal(exact(png), drafted(png))


def test_region_path_close_to_exact() -> None:
    for w, h in [(20, 4000), (4000, 20), (640, 480)]:
        img = make_mode("RGB", w, h, seed=1)
        exact = ImagePreprocessor(cfg(224))(img)
        region = ImagePreprocessor(cfg(224), max_resize_pixels=1)(img)
        cos = float((exact * region).sum() / np.linalg.norm(exact) / np.linalg.norm(region))
        assert cos > 0.9999 and float(np.abs(exact - region).max()) < 0.1, (w, h)


def test_preprocess_speed() -> None:
    pp = ImagePreprocessor(cfg(224))
    data = encode(photo_like(1000, 800, seed=1), "JPEG", quality=90)
    pp(data)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        pp(data)
        times.append(time.perf_counter() - t0)
    assert min(times) < 0.25, times  # ~10-30 ms on a dev box


def test_no_torch_import() -> None:
    code = (
        "import sys, handler.core.tokenizer, handler.core.preprocess; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'open_clip')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[3]
    res = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


# ----------------------------------------------------------------- aspect ratio, bit depth, transparency


def test_aspect_ratio_cap_checked_before_decoding() -> None:
    from handler.core.errors import ImageAspectRatioError
    from handler.core.images import MAX_ASPECT_RATIO, probe_image

    # 1 x 40,000,000: under the pixel limit, seconds to decode; refused on the header (the IDAT is garbage,
    # so decoding would raise InvalidImageError instead)
    for w, h in [(1, 40_000_000), (40_000_000, 1), (10, 10 * MAX_ASPECT_RATIO + 1)]:
        with pytest.raises(ImageAspectRatioError, match="long side is over 200 times"):
            decode_image(png_header_only(w, h))
        with pytest.raises(ImageAspectRatioError):
            probe_image(png_header_only(w, h))
        with pytest.raises(ImageTooLargeError):  # the same family as the pixel limit (413 in the service)
            ImagePreprocessor(cfg(64))(png_header_only(w, h))
    assert probe_image(png_header_only(10, 10 * MAX_ASPECT_RATIO)) == (10, 2000)
    ok = encode(noise_rgb(MAX_ASPECT_RATIO, 1), "PNG")
    assert decode_image(ok).size == (MAX_ASPECT_RATIO, 1)
    assert decode_image(encode(noise_rgb(MAX_ASPECT_RATIO + 1, 1), "PNG"), max_aspect=None).size == (201, 1)
    assert decode_image(noise_rgb(5000, 2)).size == (5000, 2)  # already decoded: not checked again


def _gray8(w: int = 120, h: int = 90) -> Image.Image:
    return photo_like(w, h, seed=4).convert("L")


@pytest.mark.parametrize("kind", ["png16", "tiff16", "tiff-int32", "tiff-float01", "tiff-float255"])
def test_high_bit_depth_matches_the_8bit_image(kind: str) -> None:
    """16-bit PNG / TIFF and float TIFF are scaled to 8 bits (PIL's convert clips them to white/black)."""
    gray = _gray8()
    g = np.asarray(gray).astype(np.int64)
    arr, fmt = {
        "png16": ((g * 257).astype(np.uint16), "PNG"),
        "tiff16": ((g * 257).astype(np.uint16), "TIFF"),
        "tiff-int32": ((g * 257).astype(np.int32), "TIFF"),
        "tiff-float01": ((g / 255.0).astype(np.float32), "TIFF"),
        "tiff-float255": (g.astype(np.float32), "TIFF"),
    }[kind]
    data = encode(Image.fromarray(arr), fmt)
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I", "F")
    decoded = decode_image(data)
    assert decoded.mode == "L" and np.array_equal(np.asarray(decoded), np.asarray(gray)), kind
    for c in (cfg(224), cfg(64, "bilinear", "longest", fill_color=255)):
        assert np.array_equal(ImagePreprocessor(c)(data), ImagePreprocessor(c)(gray)), kind
    if kind != "tiff-float255":  # what open_clip alone makes of it: flat white / black, not the picture
        clipped = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert clipped.std() < 40 and np.asarray(gray).std() > 40


def test_high_bit_depth_ranges() -> None:
    from handler.core.images import to_8bit

    full16 = Image.fromarray(np.array([[0, 128, 257, 32896, 65535]], dtype=np.uint16))
    assert np.asarray(to_8bit(full16)).tolist() == [[0, 0, 1, 128, 255]]
    big_endian = Image.frombytes("I;16B", (3, 1), np.array([0, 32896, 65535], dtype=">u2").tobytes())
    assert np.asarray(to_8bit(big_endian)).tolist() == [[0, 128, 255]]
    int32 = Image.fromarray(np.array([[-5, 0, 65535, 100000]], dtype=np.int32), "I")  # clipped to 16 bits
    assert np.asarray(to_8bit(int32)).tolist() == [[0, 0, 255, 255]]
    # float outside [0, 255]: stretched from min to max; NaN counts as the minimum
    wide = Image.fromarray(np.array([[-1.0, 0.0, 1.0, np.nan]], dtype=np.float32), "F")
    assert np.asarray(to_8bit(wide)).tolist() == [[0, 128, 255, 0]]
    flat = Image.fromarray(np.full((2, 2), 7e5, dtype=np.float32), "F")
    assert np.asarray(to_8bit(flat)).tolist() == [[0, 0], [0, 0]]
    for mode in ("RGB", "L", "P", "RGBA"):
        img = make_mode(mode, 4, 4)
        assert to_8bit(img) is img
    # a 16-bit transparent grey level (PNG tRNS) becomes an alpha channel
    keyed = Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.uint16))
    keyed.info["transparency"] = 1000
    out = to_8bit(keyed)
    assert out.mode == "LA" and [out.getpixel((x, 0))[1] for x in range(3)] == [255, 0, 255]


def _composite(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    rgba = img.convert("RGBA")
    out = Image.new("RGB", rgba.size, background)
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def test_transparency_opaque_alpha_changes_nothing() -> None:
    for w, h in [(300, 200), (50, 70), (640, 480)]:
        rgb = make_mode("RGB", w, h, seed=w)
        rgba = rgb.copy()
        rgba.putalpha(255)
        for c in (cfg(224), cfg(64, "bilinear", "longest", fill_color=9), cfg((96, 64), "bicubic", "squash")):
            assert np.array_equal(ImagePreprocessor(c)(rgba), ImagePreprocessor(c)(rgb)), (w, h, c)


def test_transparency_composited_over_the_background() -> None:
    # RGBA / LA: like open_clip on the image composited first (resizing premultiplied and compositing
    # commute up to rounding; random per-pixel alpha is the worst case)
    for mode in ("RGBA", "LA"):
        for w, h in [(300, 200), (64, 64), (130, 333)]:
            img = make_mode(mode, w, h, seed=w)
            for c in (cfg(224), cfg(64, "bilinear", "longest"), cfg((96, 64), "bicubic", "squash")):
                ours = ImagePreprocessor(c)(img)
                ref = reference(c)(_composite(img)).numpy()
                cos = float((ours * ref).sum() / np.linalg.norm(ours) / np.linalg.norm(ref))
                assert float(np.abs(ours - ref).mean()) < 0.02 and cos > 0.999, (mode, w, h, c)
    # palette transparency: P is resized with NEAREST, which commutes exactly with compositing
    for w, h in [(300, 200), (50, 30)]:
        img = make_mode("PA", w, h, seed=w)
        for rmode in ("shortest", "longest", "squash"):
            ours = ImagePreprocessor(cfg(64, "bicubic", rmode))(img)
            assert np.array_equal(ours, ImagePreprocessor(cfg(64, "nearest", rmode))(_composite(img))), rmode
    # fully transparent: exactly the background colour; black and white backgrounds differ
    clear = Image.new("RGBA", (80, 60), (10, 200, 30, 0))
    for bg in ((255, 255, 255), (0, 0, 0), (12, 34, 56)):
        out = ImagePreprocessor(cfg(32), background=bg)(clear)
        expected = ImagePreprocessor(cfg(32))(Image.new("RGB", (80, 60), bg))
        assert np.array_equal(out, expected), bg
    # background=None: open_clip's behaviour (alpha dropped; black once premultiplied resizing touched it)
    assert np.array_equal(
        ImagePreprocessor(cfg(32), background=None)(clear),
        ImagePreprocessor(cfg(32))(Image.new("RGB", (80, 60), (0, 0, 0))),
    )


def test_background_parsing_and_options() -> None:
    from handler.core.images import LEGACY_OPTIONS, ImageOptions, parse_background

    assert (
        parse_background("white")
        == parse_background("#FFF")
        == parse_background("255, 255,255")
        == (255,) * 3
    )
    assert parse_background("#102030") == (16, 32, 48) and parse_background([1, 2, 3]) == (1, 2, 3)
    assert parse_background("none") is None and parse_background(None) is None
    for bad in ("purple", "#12345", "1,2", "1,2,256", [1, 2, True], 7):
        with pytest.raises(ValueError):
            parse_background(bad)
    with pytest.raises(ArtifactError):
        ImagePreprocessor(cfg(), background="chartreuse")  # type: ignore[arg-type]
    opts = ImageOptions()
    assert opts.to_manifest() == {"background": "#ffffff", "jpeg_draft": True}
    assert ImageOptions.from_manifest(opts.to_manifest()) == opts
    assert ImageOptions.from_manifest(None) == LEGACY_OPTIONS == ImageOptions(None, False)
    assert ImageOptions.from_manifest({"background": "none", "jpeg_draft": False}) == LEGACY_OPTIONS
    for bad in ({"background": "#fff"}, {"background": "mauve", "jpeg_draft": True}, "white"):
        with pytest.raises(ArtifactError, match="image_preprocess"):
            ImageOptions.from_manifest(bad)
    pp = ImagePreprocessor(cfg())
    assert pp.options == opts and pp.with_options(opts) is pp
    legacy = pp.with_options(LEGACY_OPTIONS)
    assert legacy.options == LEGACY_OPTIONS and pp.options == opts and legacy.size == pp.size


def test_draft_keeps_the_full_size() -> None:
    from handler.core.images import image_size

    data = encode(photo_like(3000, 2000, seed=1), "JPEG", quality=85)
    loaded = ImagePreprocessor(cfg(224)).load(data)
    assert loaded.size == (750, 500) and image_size(loaded) == (3000, 2000)
    exact = ImagePreprocessor(cfg(224), draft=False).load(data)
    assert exact.size == image_size(exact) == (3000, 2000)
