"""demo.evaluate on hand-made embeddings (no model needed)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from demo.evaluate import (
    evaluate,
    image_query_precision_at_k,
    text_to_image_precision_at_1,
    zero_shot_accuracy,
)
from demo.shapes import CLASSES, caption

CAPTION_TO_CLASS = {caption(*c): i for i, c in enumerate(CLASSES)}


def _one_hot(i: int, noise: np.ndarray | None = None) -> np.ndarray:
    v = np.zeros(len(CLASSES), dtype=np.float32)
    v[i] = 1.0
    if noise is not None:
        v = v + noise
    return v / np.linalg.norm(v)


def _oracle(labels: list[tuple[str, str]], wrong: set[int] = frozenset()):  # type: ignore[assignment]
    """Near-perfect embedders, except images at indices in `wrong` look exactly like the next class."""
    images = [Image.new("RGB", (4, 4), (i % 256, 0, 0)) for i in range(len(labels))]
    ids = {id(im): n for n, im in enumerate(images)}
    rng = np.random.default_rng(0)

    def embed_text(texts: Sequence[str]) -> np.ndarray:
        return np.stack([_one_hot(CAPTION_TO_CLASS[t]) for t in texts])

    def embed_image(ims: Sequence[Image.Image]) -> np.ndarray:
        out = []
        for im in ims:
            n = ids[id(im)]
            cls = CLASSES.index(labels[n])
            if n in wrong:  # exactly the next class's caption: the best match for that caption
                out.append(_one_hot((cls + 1) % len(CLASSES)))
            else:
                out.append(_one_hot(cls, rng.normal(0, 0.01, len(CLASSES)).astype(np.float32)))
        return np.stack(out)

    return images, embed_text, embed_image


def test_perfect_embedders() -> None:
    labels = [c for c in CLASSES for _ in range(6)]
    images, et, ei = _oracle(labels)
    assert zero_shot_accuracy(et, ei, images, labels) == 1.0
    assert text_to_image_precision_at_1(et, ei, images, labels) == 1.0
    assert image_query_precision_at_k(ei, images, labels, k=5) == 1.0
    res = evaluate(et, ei, images, labels)
    assert res["zero_shot_accuracy"] == 1.0
    assert res["text_to_image_precision_at_1"] == 1.0
    assert res["image_query_precision_at_5"] == 1.0
    assert res["text_to_image_misses"] == []


def test_mistakes_are_counted() -> None:
    labels = [c for c in CLASSES for _ in range(3)]
    # image 0 (class 0) looks exactly like class 1: class 1's caption retrieves it first
    images, et, ei = _oracle(labels, wrong={0})
    assert zero_shot_accuracy(et, ei, images, labels) == pytest.approx(1 - 1 / len(labels))
    assert text_to_image_precision_at_1(et, ei, images, labels) == pytest.approx(1 - 1 / len(CLASSES))
    res = evaluate(et, ei, images, labels, k=1)
    assert res["text_to_image_misses"] == [caption(*CLASSES[1])]
    assert 0.9 < res["image_query_precision_at_1"] < 1.0


def test_missing_class_is_an_error() -> None:
    labels = [c for c in CLASSES[:-1] for _ in range(2)]
    images, et, ei = _oracle(labels)
    with pytest.raises(ValueError, match="lacks classes"):
        text_to_image_precision_at_1(et, ei, images, labels, classes=CLASSES)


def test_unnormalised_embeddings_are_rejected() -> None:
    labels = [c for c in CLASSES for _ in range(2)]
    images, et, _ = _oracle(labels)
    with pytest.raises(ValueError, match="normalised"):
        zero_shot_accuracy(et, lambda ims: 3 * np.ones((len(ims), len(CLASSES)), np.float32), images, labels)
