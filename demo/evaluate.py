"""Retrieval metrics for the demo model, independent of the runtime (torch or ONNX).

Every function takes embedding callables that return L2-normalised float arrays:

- ``embed_text(list[str]) -> np.ndarray [n, dim]``
- ``embed_image(list[PIL.Image.Image]) -> np.ndarray [n, dim]``

so the same numbers can be computed through open_clip in torch, or through the exported ONNX bundle.
Labels are ``(colour, shape)`` tuples as produced by :func:`demo.shapes.sample`.
Only numpy is needed here (no torch import).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from demo.shapes import CLASSES, caption

EmbedText = Callable[[Sequence[str]], np.ndarray]
EmbedImage = Callable[[Sequence[Image.Image]], np.ndarray]
Label = tuple[str, str]

__all__ = [
    "EmbedImage",
    "EmbedText",
    "evaluate",
    "image_query_precision_at_k",
    "image_query_precision_at_k_from_embeddings",
    "text_to_image_precision_at_1",
    "text_to_image_top1_from_embeddings",
    "zero_shot_accuracy",
    "zero_shot_accuracy_from_embeddings",
]


def _check_embeddings(x: np.ndarray, n: int, what: str, atol: float = 1e-2) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(f"{what}: expected shape [{n}, dim], got {list(x.shape)}")
    norms = np.linalg.norm(x, axis=1)
    if n and not np.allclose(norms, 1.0, atol=atol):
        raise ValueError(
            f"{what}: embeddings are not L2-normalised (norms in [{norms.min()}, {norms.max()}])"
        )
    return x


def _classes_for(labels: Sequence[Label], classes: Sequence[Label] | None) -> list[Label]:
    if classes is not None:
        return list(classes)
    present = set(labels)
    return [c for c in CLASSES if c in present] + sorted(present - set(CLASSES))


# --- array-level metrics ---------------------------------------------------------------------------------


def zero_shot_accuracy_from_embeddings(
    text_emb: np.ndarray, image_emb: np.ndarray, labels: Sequence[Label], classes: Sequence[Label]
) -> float:
    """Fraction of images whose most similar class caption (rows of `text_emb`, one per class) is theirs."""
    if not len(labels):
        raise ValueError("no images")
    index = {c: i for i, c in enumerate(classes)}
    truth = np.array([index[label] for label in labels])
    pred = np.argmax(image_emb @ text_emb.T, axis=1)
    return float(np.mean(pred == truth))


def text_to_image_top1_from_embeddings(
    text_emb: np.ndarray, image_emb: np.ndarray, labels: Sequence[Label], classes: Sequence[Label]
) -> dict[str, bool]:
    """For each class caption: is the top-ranked image of that class? (``{caption: hit}``)."""
    missing = set(classes) - set(labels)
    if missing:
        raise ValueError(f"held-out set lacks classes {sorted(missing)}")
    top = np.argmax(text_emb @ image_emb.T, axis=1)
    return {caption(*cls): labels[int(top[i])] == cls for i, cls in enumerate(classes)}


def image_query_precision_at_k_from_embeddings(
    image_emb: np.ndarray, labels: Sequence[Label], k: int = 5
) -> float:
    """Mean over all images used as queries of the fraction of its top-`k` *other* images with the same label."""
    n = len(labels)
    if n <= k:
        raise ValueError(f"need more than k={k} images, got {n}")
    sims = image_emb @ image_emb.T
    np.fill_diagonal(sims, -np.inf)  # a query never retrieves itself
    # stable sort on -sims: ties resolved by index, deterministic
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    lab = np.array([f"{c}/{s}" for c, s in labels])
    return float(np.mean(lab[top] == lab[:, None]))


# --- embedder-level metrics (spec API) -------------------------------------------------------------------


def _embed(
    embed_text: EmbedText | None,
    embed_image: EmbedImage,
    images: Sequence[Image.Image],
    classes: Sequence[Label],
) -> tuple[np.ndarray | None, np.ndarray]:
    image_emb = _check_embeddings(embed_image(list(images)), len(images), "image embeddings")
    text_emb = None
    if embed_text is not None:
        text_emb = _check_embeddings(
            embed_text([caption(*c) for c in classes]), len(classes), "text embeddings"
        )
        if text_emb.shape[1] != image_emb.shape[1]:
            raise ValueError(f"embedding dims differ: text {text_emb.shape[1]}, image {image_emb.shape[1]}")
    return text_emb, image_emb


def zero_shot_accuracy(
    embed_text: EmbedText,
    embed_image: EmbedImage,
    images: Sequence[Image.Image],
    labels: Sequence[Label],
    classes: Sequence[Label] | None = None,
) -> float:
    """Zero-shot classification accuracy of `images` against the captions of `classes` (default: all)."""
    classes = _classes_for(labels, classes if classes is not None else CLASSES)
    text_emb, image_emb = _embed(embed_text, embed_image, images, classes)
    assert text_emb is not None
    return zero_shot_accuracy_from_embeddings(text_emb, image_emb, labels, classes)


def text_to_image_precision_at_1(
    embed_text: EmbedText,
    embed_image: EmbedImage,
    images: Sequence[Image.Image],
    labels: Sequence[Label],
    classes: Sequence[Label] | None = None,
) -> float:
    """Fraction of class captions whose top-ranked image (among `images`) is of that class.

    The held-out set must contain every class. 1.0 means every caption retrieves its own class first.
    """
    classes = _classes_for(labels, classes if classes is not None else CLASSES)
    text_emb, image_emb = _embed(embed_text, embed_image, images, classes)
    assert text_emb is not None
    hits = text_to_image_top1_from_embeddings(text_emb, image_emb, labels, classes)
    return float(np.mean(list(hits.values())))


def image_query_precision_at_k(
    embed_image: EmbedImage, images: Sequence[Image.Image], labels: Sequence[Label], k: int = 5
) -> float:
    """Image->image retrieval: mean fraction of each image's top-`k` neighbours (itself excluded)
    sharing its colour and shape."""
    _, image_emb = _embed(None, embed_image, images, [])
    return image_query_precision_at_k_from_embeddings(image_emb, labels, k)


def evaluate(
    embed_text: EmbedText,
    embed_image: EmbedImage,
    images: Sequence[Image.Image],
    labels: Sequence[Label],
    k: int = 5,
    classes: Sequence[Label] | None = None,
) -> dict[str, object]:
    """All metrics at once (images are embedded a single time).

    Returns ``{"zero_shot_accuracy", "text_to_image_precision_at_1", f"image_query_precision_at_{k}",
    "text_to_image_misses": [captions whose top image is of another class], "images", "classes"}``.
    """
    classes = _classes_for(labels, classes if classes is not None else CLASSES)
    text_emb, image_emb = _embed(embed_text, embed_image, images, classes)
    assert text_emb is not None
    hits = text_to_image_top1_from_embeddings(text_emb, image_emb, labels, classes)
    return {
        "zero_shot_accuracy": zero_shot_accuracy_from_embeddings(text_emb, image_emb, labels, classes),
        "text_to_image_precision_at_1": float(np.mean(list(hits.values()))),
        f"image_query_precision_at_{k}": image_query_precision_at_k_from_embeddings(image_emb, labels, k),
        "text_to_image_misses": [c for c, hit in hits.items() if not hit],
        "images": len(labels),
        "classes": len(classes),
    }
