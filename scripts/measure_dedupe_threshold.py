"""Where to put the default ``dedupe`` threshold: cosines of near-duplicate copies vs distinct images.

    python scripts/measure_dedupe_threshold.py BUNDLE_DIR [--count 256] [--seed 11]

Distinct: the demo collection (``demo.shapes.write_collection``, JPEG q92, 128 px as ``make demo`` writes it):
each image's nearest-neighbour cosine among the others (same class: the hardest distinct pairs).
Copies: each image against an exact copy and the edits that make "the same photo" in a real library:
JPEG re-encodes (q 75 and 50), PNG, half and double size, a 5% crop, +10% brightness. Prints the
distributions; the default (handler.core.dedupe.DEFAULT_THRESHOLD) must sit between them. Results:
docs/api.md, "Near-duplicates".
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.shapes import write_collection
from handler.core.runtime import load_bundle


def _jpeg(quality: int) -> Callable[[Image.Image], bytes]:
    def edit(img: Image.Image) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        return buf.getvalue()

    return edit


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


EDITS: dict[str, Callable[[Image.Image], bytes]] = {
    "copy": lambda img: b"",  # the file itself (replaced below)
    "jpeg q75": _jpeg(75),
    "jpeg q50": _jpeg(50),
    "png": _png,
    "half size": lambda img: _jpeg(90)(img.resize((img.width // 2, img.height // 2), Image.BICUBIC)),
    "double size": lambda img: _jpeg(90)(img.resize((img.width * 2, img.height * 2), Image.BICUBIC)),
    "crop 5%": lambda img: _jpeg(90)(
        img.crop(
            (img.width // 20, img.height // 20, img.width - img.width // 20, img.height - img.height // 20)
        )
    ),
    "brighter 10%": lambda img: _jpeg(90)(ImageEnhance.Brightness(img).enhance(1.1)),
}


THRESHOLDS = (0.94, 0.96, 0.98, 0.99, 0.995, 0.997, 0.998)


def _stats(values: np.ndarray) -> str:
    q = np.quantile(values, [0.0, 0.01, 0.5, 0.99, 1.0])
    return "min {:.4f}  p1 {:.4f}  median {:.4f}  p99 {:.4f}  max {:.4f}".format(*q)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("bundle")
    p.add_argument("--count", type=int, default=256)
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args()
    emb = load_bundle(args.bundle, threads=2)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_collection(tmp, args.count, args.seed, size=128, fmt="jpg")
        raw = [path.read_bytes() for path in paths]
        vectors = emb.embed_images(raw)
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -1.0)
        nn = sims.max(axis=1)
        print(f"distinct images, nearest-neighbour cosine (n={len(nn)}): {_stats(nn)}")
        lowest = {}
        caught: dict[str, np.ndarray] = {}
        for name, edit in EDITS.items():
            images = []
            for data in raw:
                with Image.open(io.BytesIO(data)) as img:
                    images.append(data if name == "copy" else edit(img.convert("RGB")))
            cos = np.sum(emb.embed_images(images) * vectors, axis=1)
            lowest[name] = float(cos.min())
            caught[name] = cos
            print(f"copy: {name:<13} cosine with the original: {_stats(cos)}")
    print(f"highest distinct NN cosine {nn.max():.4f}; lowest copy cosine {min(lowest.values()):.4f}")
    print("\nthreshold | distinct images merged with their nearest neighbour | copies caught, per edit")
    for t in THRESHOLDS:
        copies = ", ".join(f"{name} {np.mean(cos >= t):.0%}" for name, cos in caught.items())
        print(f"{t} | {np.mean(nn >= t):.1%} | {copies}")


if __name__ == "__main__":
    main()
