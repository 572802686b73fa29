"""Compound queries (issue 17 #1): the weighted combination, and terms embedded in one call per tower."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handler.core.errors import BadInputError
from handler.core.query import (
    InvalidEmbeddingError,
    Term,
    UnknownItemError,
    combine,
    embed_terms,
    query_kind,
    unit_vector,
)
from tests.handler.conftest import render_png


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_combine_is_the_normalised_weighted_sum_of_normalised_vectors() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(3, 16)) * np.array([[1.0], [5.0], [0.1]])  # norms differ: each is normalised
    weights = [1.0, -0.5, 2.0]
    expected = _unit(sum(w * _unit(r) for w, r in zip(weights, rows, strict=True)))
    out = combine(rows.astype(np.float32), weights)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(combine(rows, [2.0, 0.0, 0.0]), _unit(rows[0]), atol=1e-6)  # scale-free


def test_one_positive_term_keeps_its_exact_vector() -> None:
    row = _unit(np.arange(1, 9, dtype=np.float32))
    assert np.array_equal(combine(row[None], [1.0]), row)
    assert np.array_equal(combine(row[None], [3.0]), row)
    np.testing.assert_allclose(combine(row[None], [-1.0]), -row, atol=1e-6)  # "anything but this"


@pytest.mark.parametrize(
    ("rows", "weights", "needle"),
    [
        (np.eye(2), [0.0, 0.0], "all zero"),
        (np.eye(2), [float("nan"), 1.0], "not finite"),
        (np.stack([np.ones(4), np.ones(4)]), [1.0, -1.0], "cancel out"),
        (np.stack([np.ones(4), 2 * np.ones(4)]), [2.0, -2.0], "cancel out"),
    ],
)
def test_combine_refuses_a_zero_query(rows: np.ndarray, weights: list[float], needle: str) -> None:
    with pytest.raises(InvalidEmbeddingError, match=needle) as info:
        combine(rows, weights)
    assert info.value.status == 400 and info.value.code == "invalid_embedding"


def test_unit_vector() -> None:
    np.testing.assert_allclose(unit_vector([3.0, 4.0], 2), [0.6, 0.8], atol=1e-7)
    np.testing.assert_allclose(unit_vector([1e308, 1e308], 2), [2**-0.5] * 2, atol=1e-7)  # no overflow
    with pytest.raises(
        InvalidEmbeddingError, match="'terms'\\[1\\] has 3 values, the index's dimension is 2"
    ):
        unit_vector([1.0, 2.0, 3.0], 2, "'terms'[1]")
    with pytest.raises(InvalidEmbeddingError, match="zero vector"):
        unit_vector([0.0, 0.0], 2)


@pytest.fixture(scope="module")
def index(demo_index: tuple[Path, Path], demo_embedder: Any) -> Any:
    from handler.core.index import load_index

    return load_index(demo_index[0], expected_fingerprint=demo_embedder.model_fingerprint)


class Counting:
    """The embedder, with its text and image tower calls (and batch sizes) recorded."""

    def __init__(self, embedder: Any):
        self._e = embedder
        self.calls: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._e, name)

    def embed_tokens(self, ids: np.ndarray) -> np.ndarray:
        self.calls.append(("text", len(ids)))
        return self._e.embed_tokens(ids)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        self.calls.append(("image", len(pixels)))
        return self._e.embed_pixels(pixels)


def test_terms_are_embedded_in_one_call_per_tower(index: Any, demo_embedder: Any) -> None:
    red, blue = render_png("red", "circle", seed=3), render_png("blue", "square", seed=4)
    first = index.items[0]["id"]
    terms = [
        Term("text", "a red circle"),
        Term("image", red, 0.5),
        Term("text", "a green star", -0.25),
        Term("id", first, 0.3),
        Term("image", blue, 0.7),
        Term("embedding", [1.0] * index.dim, 0.1),
        Term("text", "a blue square", 2.0),
    ]
    emb = Counting(demo_embedder)
    q = embed_terms(terms, index, emb)
    assert sorted(emb.calls) == [("image", 2), ("text", 3)]
    texts = demo_embedder.embed_texts(["a red circle", "a green star", "a blue square"])
    images = demo_embedder.embed_images([red, blue])
    label = index.label_for(first)
    rows = [
        texts[0],
        images[0],
        texts[1],
        index.embedding(label),
        images[1],
        _unit(np.ones(index.dim)),
        texts[2],
    ]
    np.testing.assert_allclose(q.vector, combine(np.stack(rows), [t.weight for t in terms]), atol=1e-5)
    assert q.exclude == {label}
    assert [d["type"] for d in q.terms] == ["text", "image", "text", "id", "image", "embedding", "text"]
    assert q.terms[0] == {"type": "text", "text": "a red circle", "truncated": False, "weight": 1.0}
    assert q.terms[1]["width"] == 96 and q.terms[1]["bytes"] == len(red)
    assert q.terms[3] == {"type": "id", "id": first, "weight": 0.3}


def test_term_errors_name_the_term(index: Any, demo_embedder: Any) -> None:
    with pytest.raises(UnknownItemError, match=r"^'terms'\[1\]: no item with id 'nope'") as info:
        embed_terms([Term("text", "a"), Term("id", "nope", field="'terms'[1]")], index, demo_embedder)
    assert info.value.status == 404
    with pytest.raises(UnknownItemError, match=r"^no item with id 'nope'"):  # a single query: as before
        embed_terms([Term("id", "nope")], index, demo_embedder)
    with pytest.raises(BadInputError, match=r"^'terms'\[0\]: ") as bad:
        embed_terms([Term("image", b"not an image", field="'terms'[0]")], index, demo_embedder)
    assert bad.value.code == "invalid_image"
    with pytest.raises(InvalidEmbeddingError, match="'terms'\\[0\\] has 2 values"):
        embed_terms([Term("embedding", [1.0, 2.0], field="'terms'[0]")], index, demo_embedder)


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (["image"], "image"),
        (["id"], "image"),  # "more like this": a stored point of the images' distribution
        (["image", "id", "image"], "image"),
        (["text"], "text"),
        (["text", "text"], "text"),
        (["embedding"], None),  # a raw vector of unknown origin: the widest ef
        (["text", "image"], None),
        (["id", "embedding"], None),
    ],
)
def test_query_kind_picks_the_calibrated_ef_a_query_needs(kinds: list[str], expected: str | None) -> None:
    assert query_kind([Term(k, None) for k in kinds]) == expected
