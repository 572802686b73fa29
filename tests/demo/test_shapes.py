from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo import shapes
from demo.shapes import CLASSES, COLOURS, SHAPES, caption, render, sample, write_collection

REPO = Path(__file__).resolve().parents[2]


def _digest(items: list[tuple[Image.Image, str, str]]) -> str:
    h = hashlib.sha256()
    for img, colour, shape in items:
        h.update(f"{colour}/{shape}/{img.size}/{img.mode}".encode())
        h.update(img.tobytes())
    return h.hexdigest()


def test_at_least_8_colours_and_4_shapes() -> None:
    assert len(set(COLOURS)) >= 8
    assert len(set(SHAPES)) >= 4
    assert len(CLASSES) == len(COLOURS) * len(SHAPES)
    assert set(CLASSES) == {(c, s) for c in COLOURS for s in SHAPES}


def test_caption_format() -> None:
    assert caption("red", "circle") == "a red circle"
    for colour, shape in CLASSES:
        assert caption(colour, shape) == f"a {colour} {shape}"
    assert len({caption(c, s) for c, s in CLASSES}) == len(CLASSES)
    with pytest.raises(ValueError):
        caption("magenta", "circle")
    with pytest.raises(ValueError):
        caption("red", "hexagon")


def test_render_is_rgb_of_requested_size() -> None:
    rng = np.random.default_rng(0)
    for size in (32, 64, 128):
        img = render("blue", "star", rng, size)
        assert img.mode == "RGB"
        assert img.size == (size, size)


def test_render_draws_the_shape_colour() -> None:
    """The nominal colour (within jitter + antialiasing) covers a decent number of pixels."""
    rng = np.random.default_rng(1)
    for colour, shape in CLASSES:
        arr = np.asarray(render(colour, shape, rng, 64)).astype(int)
        near = np.abs(arr - np.array(shapes.PALETTE[colour])).max(axis=-1) <= 13
        assert near.sum() >= 40, (colour, shape, int(near.sum()))


def test_sample_is_deterministic() -> None:
    a = sample(40, seed=7, size=64)
    b = sample(40, seed=7, size=64)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(sample(40, seed=8, size=64))
    assert _digest(a) != _digest(sample(40, seed=7, size=48))


def test_sample_determinism_across_processes() -> None:
    code = (
        "import hashlib; from demo.shapes import sample;"
        "h = hashlib.sha256();"
        "[h.update(i.tobytes()) for i, _, _ in sample(16, seed=3, size=64)];"
        "print(h.hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    h = hashlib.sha256()
    for img, _, _ in sample(16, seed=3, size=64):
        h.update(img.tobytes())
    assert out.stdout.strip() == h.hexdigest()


@pytest.mark.parametrize("n", [32, 100, 7])
def test_sample_is_balanced(n: int) -> None:
    items = sample(n, seed=0, size=16)
    assert len(items) == n
    counts = Counter((c, s) for _, c, s in items)
    full = [counts.get(cls, 0) for cls in CLASSES]
    assert max(full) - min(full) <= 1
    assert sum(full) == n


def test_sample_is_shuffled() -> None:
    labels = [(c, s) for _, c, s in sample(64, seed=0, size=16)]
    assert labels != [CLASSES[i % len(CLASSES)] for i in range(64)]


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_write_collection(tmp_path: Path, fmt: str) -> None:
    paths = write_collection(tmp_path / "col", n=12, seed=5, size=64, fmt=fmt)
    assert len(paths) == 12
    assert len({p.parent for p in paths}) >= 3  # several sub-folders, some nested
    assert any(len(p.relative_to(tmp_path / "col").parts) >= 3 for p in paths)
    expected = sample(12, seed=5, size=64)
    for i, (path, (img, colour, shape)) in enumerate(zip(paths, expected, strict=True)):
        assert path.name == f"img_{i:05d}.{fmt}"
        assert path.is_file()
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta == {"colour": colour, "shape": shape, "caption": caption(colour, shape)}
        with Image.open(path) as loaded:
            assert loaded.size == (64, 64)
            if fmt == "png":
                assert loaded.convert("RGB").tobytes() == img.tobytes()
    # names carry no class information
    assert not any(c in p.name for p in paths for c in COLOURS + SHAPES)


def test_write_collection_bytes_are_deterministic(tmp_path: Path) -> None:
    a = write_collection(tmp_path / "a", n=6, seed=2, size=64, fmt="jpg")
    b = write_collection(tmp_path / "b", n=6, seed=2, size=64, fmt="jpg")
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes()


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "demo.shapes",
            "--out",
            str(out),
            "--count",
            "5",
            "--seed",
            "1",
            "--size",
            "48",
            "--format",
            "png",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    images = sorted(out.rglob("img_*.png"))
    sidecars = sorted(out.rglob("img_*.json"))
    assert len(images) == 5
    assert len(sidecars) == 5
