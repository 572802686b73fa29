"""index_builder.recall: the held-out sample, exact ground truth without it, and the per-query-kind
calibration (each kind's smallest ef reaching the target; the shard's ef is the largest)."""

from __future__ import annotations

from typing import Any

import numpy as np

from index_builder.recall import (
    HELD_OUT_MIN,
    QUERIES,
    calibrate,
    exact_topk_scores,
    held_out_rows,
    text_like,
)
from tests.conftest import normalized_vectors


def _graph(data: np.ndarray, rows: np.ndarray, M: int = 6, ef_construction: int = 30) -> Any:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=data.shape[1])
    index.init_index(max_elements=len(data), M=M, ef_construction=ef_construction, random_seed=1)
    index.add_items(data[rows], rows, num_threads=1)
    return index


def test_held_out_rows_are_a_tenth_at_most_and_none_for_small_shards() -> None:
    assert len(held_out_rows(10 * HELD_OUT_MIN - 1)) == 0  # too few to spare: stand-in queries
    rows = held_out_rows(5000)
    assert len(rows) == 500 and len(set(rows.tolist())) == 500 and np.all(np.diff(rows) > 0)
    assert rows.min() >= 0 and rows.max() < 5000
    assert len(held_out_rows(1_000_000)) == QUERIES
    assert np.array_equal(held_out_rows(5000), rows)  # deterministic: a rebuild measures the same way


def test_exact_truth_leaves_the_skipped_rows_out() -> None:
    data = normalized_vectors(3000, 16, seed=2)
    queries = data[:5]
    skip = np.zeros(len(data), dtype=bool)
    skip[:100] = True  # the queries themselves among them
    got = exact_topk_scores(queries, data, 10, skip)
    want = -np.sort(-(queries @ data[100:].T), axis=1)[:, :10]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.all(exact_topk_scores(queries, data, 1)[:, 0] > 0.999)  # without skip: each finds itself


def test_each_query_kind_gets_its_smallest_ef_on_held_out_rows() -> None:
    data = normalized_vectors(6000, 32, clusters=60, seed=5)
    held = held_out_rows(len(data))
    index = _graph(data, np.setdiff1d(np.arange(len(data)), held))
    cal = calibrate(index, data, 0.95, held_out=held)
    image, text = cal.by_query["image"], cal.by_query["text"]
    assert cal.reached and cal.queries == 2 * len(held)
    assert image[1] >= 0.95 and text[1] >= 0.95
    assert cal.ef == max(image[0], text[0]) and cal.recall == min(image[1], text[1])
    assert text[0] > image[0], cal  # far (text-like) queries need a wider search than points of the data
    # the recall it reports is what a search at that ef gets: re-measured here by hand
    queries = data[held]
    skip = np.zeros(len(data), dtype=bool)
    skip[held] = True
    kth = exact_topk_scores(queries, data, 10, skip)[:, 9:10] - 1e-5
    index.set_ef(image[0])
    labels, dist = index.knn_query(queries, k=10)
    assert not np.isin(labels, held).any()  # held-out rows are not in the graph while it measures
    assert float(np.mean((1.0 - dist) >= kth)) == image[1]
    # the smallest: half of each kind's ef misses the target for that kind
    half = calibrate(index, data, 0.95, held_out=held, fixed_ef=max(image[0] // 2, 1))
    assert half.by_query["image"][1] < 0.95 or image[0] <= 10
    assert calibrate(index, data, 0.95, held_out=held, fixed_ef=text[0] // 2).by_query["text"][1] < 0.95


def test_stand_in_queries_when_nothing_is_held_out() -> None:
    data = normalized_vectors(600, 16, clusters=12, seed=7)
    index = _graph(data, np.arange(len(data)))
    cal = calibrate(index, data, 0.99, queries=200)
    assert set(cal.by_query) == {"image", "text"} and cal.queries == 200 and cal.recall >= 0.99
    one = calibrate(index, data[:1], 0.99)  # one row: one query, both kinds
    assert one.by_query["image"] == one.by_query["text"]


def test_text_like_queries_sit_at_the_set_cosine_from_their_base() -> None:
    base = normalized_vectors(50, 64, seed=3)
    q = text_like(base, np.random.default_rng(0))
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.sum(q * base, axis=1), 0.5, atol=1e-4)
