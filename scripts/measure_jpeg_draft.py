"""Embedding-level effect of JPEG draft decoding (the default): cosine(full-size decode, draft decode).

    python scripts/measure_jpeg_draft.py BUNDLE_DIR

25 JPEGs (q=90) from 1600x1200 to 6000x4000: demo shapes upscaled, and photo-like images. Prints the
cosine per image, min / mean, and the preprocessing time of both paths. Results: docs/formats.md.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.shapes import sample
from handler.core.preprocess import ImagePreprocessor
from handler.core.runtime import load_bundle
from tests.handler.img_samples import photo_like

SIZES = [(1600, 1200), (3000, 2000), (4000, 3000), (6000, 4000), (2000, 3000)]


def main(bundle: str) -> None:
    emb = load_bundle(bundle, threads=2)
    section = emb.bundle.manifest["image"]
    exact, draft = ImagePreprocessor(section, draft=False), ImagePreprocessor(section, draft=True)
    print("image section", section)
    cases = [
        (
            f"shape {colour} {shape} {SIZES[i % 5][0]}x{SIZES[i % 5][1]}",
            img.resize(SIZES[i % 5], Image.BICUBIC),
        )
        for i, (img, colour, shape) in enumerate(sample(20, seed=5, size=384))
    ]
    cases += [(f"photo_like {w}x{h}", photo_like(w, h, seed=i)) for i, (w, h) in enumerate(SIZES)]
    cos, t_exact, t_draft = [], 0.0, 0.0
    for name, img in cases:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        data = buf.getvalue()
        t0 = time.perf_counter()
        a = exact(data)
        t1 = time.perf_counter()
        d = draft(data)
        t_exact, t_draft = t_exact + t1 - t0, t_draft + time.perf_counter() - t1
        va, vd = emb.embed_pixels(np.stack([a, d]))
        cos.append(float(va @ vd))
        print(f"{name:40s} cos {cos[-1]:.6f}")
    c = np.array(cos)
    print(
        f"n={len(c)} min {c.min():.6f} mean {c.mean():.6f}; preprocessing exact {t_exact:.2f}s draft {t_draft:.2f}s"
    )


if __name__ == "__main__":
    main(sys.argv[1])
