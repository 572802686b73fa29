"""Deterministic synthetic captioned images: coloured shapes on muted backgrounds.

Every image shows exactly one shape in one of :data:`COLOURS`, drawn on a muted background
(solid, linear gradient or noise) whose colours are low-saturation mid-tones, so they can never be
mistaken for a shape colour. Size, position, rotation (a tilt of up to 25 degrees: shapes stay
upright-ish, like drawn icons) and background vary per image.

Rendering is a pure function of the :class:`numpy.random.Generator` state, so a given seed always
yields the same pixels (and, through PIL's encoders, the same file bytes).

CLI::

    python -m demo.shapes --out DIR --count N --seed S [--size 128] [--format jpg]
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "CLASSES",
    "COLOURS",
    "SHAPES",
    "caption",
    "render",
    "sample",
    "write_collection",
]

#: Nominal RGB of each shape colour (a small per-image jitter is added when rendering).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 25, 25),
    "green": (20, 165, 45),
    "blue": (25, 70, 225),
    "yellow": (245, 220, 15),
    "orange": (250, 125, 0),
    "purple": (140, 35, 185),
    "white": (250, 250, 250),
    "black": (12, 12, 12),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
CLASSES: list[tuple[str, str]] = [(c, s) for c in COLOURS for s in SHAPES]

_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down (antialiasing)
_COLOUR_JITTER = 12  # max per-channel deviation from the nominal colour
_MAX_ROTATION = math.radians(25)  # shapes are tilted by at most this much
_BACKGROUNDS = ("solid", "gradient", "noise")
_SUBDIRS = ("", "set_a", "set_b", "set_b/nested")  # write_collection spreads files over these


def caption(colour: str, shape: str) -> str:
    """The canonical caption of a class, e.g. ``caption("red", "circle") == "a red circle"``."""
    if colour not in PALETTE:
        raise ValueError(f"unknown colour {colour!r}; expected one of {COLOURS}")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return f"a {colour} {shape}"


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation mid-tone RGB colour (float, 0-255): never close to any shape colour."""
    h = rng.random()
    s = rng.uniform(0.03, 0.22)
    v = rng.uniform(0.38, 0.72)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255.0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 [size, size, 3] background."""
    kind = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    base = _muted_colour(rng)
    if kind == "solid":
        img = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    elif kind == "gradient":
        other = _muted_colour(rng)
        angle = rng.uniform(0.0, 2.0 * math.pi)
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        t = np.cos(angle) * coords[None, :] + np.sin(angle) * coords[:, None]
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = base[None, None, :] * (1.0 - t[..., None]) + other[None, None, :] * t[..., None]
    else:  # noise: per-pixel luminance noise plus a little colour noise around the base colour
        amp = rng.uniform(6.0, 18.0)
        lum = rng.normal(0.0, amp, size=(size, size, 1)).astype(np.float32)
        chroma = rng.normal(0.0, amp / 3.0, size=(size, size, 3)).astype(np.float32)
        img = base[None, None, :] + lum + chroma
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _polygon(cx: float, cy: float, radii: Sequence[float], rotation: float) -> list[tuple[float, float]]:
    """Vertices at evenly spaced angles (starting at the top), alternating through `radii`."""
    n = len(radii)
    return [
        (
            cx + radii[i] * math.sin(rotation + 2.0 * math.pi * i / n),
            cy - radii[i] * math.cos(rotation + 2.0 * math.pi * i / n),
        )
        for i in range(n)
    ]


def _shape_mask(shape: str, rng: np.random.Generator, size: int) -> Image.Image:
    """Antialiased 'L' mask of one shape (255 inside)."""
    big = size * _SUPERSAMPLE
    # radius of the circumscribed circle, as a fraction of the image side
    radius = rng.uniform(0.20, 0.38) * big
    margin = radius + 0.04 * big
    cx = rng.uniform(margin, big - margin)
    cy = rng.uniform(margin, big - margin)
    rotation = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION)  # upright-ish, like a drawn icon
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        r = radius * 0.85  # a circle looks bigger than a polygon of the same circumradius
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, [radius] * 4, rotation), fill=255)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, [radius] * 3, rotation), fill=255)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, [radius, radius * 0.42] * 5, rotation), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return mask.resize((size, size), Image.Resampling.BOX)


def render(colour: str, shape: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Render one `colour` `shape` on a random muted background as a `size` x `size` RGB image.

    Consumes random numbers from `rng`; the result is a pure function of the generator state.
    """
    if colour not in PALETTE:
        raise ValueError(f"unknown colour {colour!r}; expected one of {COLOURS}")
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    bg = _background(rng, size)
    jitter = rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3)
    fg = np.clip(np.array(PALETTE[colour]) + jitter, 0, 255).astype(np.float32)
    alpha = np.asarray(_shape_mask(shape, rng, size), dtype=np.float32)[..., None] / 255.0
    out = bg.astype(np.float32) * (1.0 - alpha) + fg[None, None, :] * alpha
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), mode="RGB")


def balanced_labels(n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """`n` class labels cycling over :data:`CLASSES` (counts differ by at most one), shuffled."""
    labels = [CLASSES[i % len(CLASSES)] for i in range(n)]
    order = rng.permutation(n)
    return [labels[i] for i in order]


def sample(n: int, seed: int, size: int = 64) -> list[tuple[Image.Image, str, str]]:
    """`n` images balanced over classes, as ``(image, colour, shape)``; deterministic in (n, seed, size)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    labels = balanced_labels(n, rng)
    return [(render(colour, shape, rng, size), colour, shape) for colour, shape in labels]


def write_collection(out_dir: str | Path, n: int, seed: int, size: int = 128, fmt: str = "jpg") -> list[Path]:
    """Write `n` images named ``img_00042.<fmt>`` (spread over a few sub-folders) to `out_dir`.

    Each image gets a sidecar ``img_00042.json`` next to it with ``{"colour", "shape", "caption"}``.
    Returns the image paths in index order.
    """
    fmt = fmt.lower().lstrip(".")
    if fmt == "jpeg":
        fmt = "jpg"
    if fmt not in ("jpg", "png"):
        raise ValueError(f"fmt must be 'jpg' or 'png', got {fmt!r}")
    out = Path(out_dir)
    paths: list[Path] = []
    for i, (img, colour, shape) in enumerate(sample(n, seed, size)):
        folder = out / _SUBDIRS[i % len(_SUBDIRS)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i:05d}.{fmt}"
        if fmt == "jpg":
            img.save(path, format="JPEG", quality=92)
        else:
            img.save(path, format="PNG")
        meta = {"colour": colour, "shape": shape, "caption": caption(colour, shape)}
        path.with_suffix(".json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo.shapes", description="Write a synthetic collection of captioned shape images."
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--count", required=True, type=int, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--format", dest="fmt", choices=("jpg", "png"), default="jpg")
    args = parser.parse_args(argv)
    paths = write_collection(args.out, args.count, args.seed, size=args.size, fmt=args.fmt)
    print(f"wrote {len(paths)} images (+ JSON sidecars) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
