"""handler.core.filtered_search: k results whenever k items are allowed, equal to exact search over the
allowed subset (both the exact and the in-HNSW way), offset / min_score, the item's own row excluded."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from handler.core.filtered_search import filtered_search
from handler.core.search import SearchIndex
from handler.core.shards import FILTER_EXACT_BELOW, FILTER_EXACT_BELOW_HNSW_VECTORS

N, DIM = 3000, 32


@pytest.fixture(scope="module")
def corpus() -> tuple[SearchIndex, np.ndarray]:
    import hnswlib

    rng = np.random.default_rng(3)
    centres = rng.standard_normal((30, DIM)).astype(np.float32)
    data = centres[rng.integers(0, 30, N)] + 0.3 * rng.standard_normal((N, DIM)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    hnsw = hnswlib.Index(space="ip", dim=DIM)
    hnsw.init_index(max_elements=N, M=8, ef_construction=40, random_seed=1)
    hnsw.add_items(data, np.arange(N), num_threads=1)
    manifest = {"version": "v1", "dim": DIM, "count": N, "model_fingerprint": "x", "ef": 16}
    return SearchIndex(manifest, hnsw, [{"id": f"i{i}"} for i in range(N)]), data


def _exact(data: np.ndarray, q: np.ndarray, mask: np.ndarray, k: int) -> list[int]:
    scores = np.where(mask, data @ q, -np.inf)
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in order[: min(k, int(mask.sum()))]]


def _queries(data: np.ndarray, n: int = 5) -> np.ndarray:
    q = data[:n] + 0.2 * np.random.default_rng(9).standard_normal((n, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_one_percent_selective_filter_gives_k_exact_results(corpus: Any) -> None:
    index, data = corpus
    mask = np.zeros(N, dtype=bool)
    mask[np.random.default_rng(1).choice(N, N // 100, replace=False)] = True  # 30 items: 1%
    assert mask.sum() / N < FILTER_EXACT_BELOW
    for q in _queries(data):
        hits = filtered_search(index, q, 10, mask, switch=FILTER_EXACT_BELOW)[0]  # the exact scan
        assert [h.label for h in hits] == _exact(data, q, mask, 10)
        default = filtered_search(index, q, 10, mask)[0]  # no embeddings.npy: 1% walks the graph
        assert len(default) == 10 and all(mask[h.label] for h in default)
        assert all(mask[h.label] for h in hits)
        assert [h.score for h in hits] == pytest.approx([float(data[h.label] @ q) for h in hits], abs=1e-5)
        assert hits[0].item == {"id": f"i{hits[0].label}"}


def test_in_hnsw_filter_keeps_k_results_and_recall(corpus: Any) -> None:
    """Above the switch point: hnswlib's filtered walk; never truncated, and close to exact."""
    index, data = corpus
    mask = np.arange(N) % 2 == 0
    found = 0
    for q in _queries(data, 10):
        hits = filtered_search(index, q, 10, mask, switch=0.0, ef=64)[0]
        assert len(hits) == 10 and all(mask[h.label] for h in hits)
        found += len({h.label for h in hits} & set(_exact(data, q, mask, 10)))
    assert found / 100 >= 0.9
    # a selective filter forced through the graph still returns k (the walk does not stop at ef visits)
    sparse = np.zeros(N, dtype=bool)
    sparse[::300] = True
    for q in _queries(data, 3):
        hits = filtered_search(index, q, 10, sparse, switch=0.0)[0]
        assert sorted(h.label for h in hits) == sorted(_exact(data, q, sparse, 10))


def test_fewer_allowed_than_k_offset_min_score(corpus: Any) -> None:
    index, data = corpus
    q = _queries(data, 1)[0]
    mask = np.zeros(N, dtype=bool)
    mask[[5, 50, 500]] = True
    assert sorted(h.label for h in filtered_search(index, q, 10, mask)[0]) == [5, 50, 500]
    full = _exact(data, q, mask, 3)
    assert [h.label for h in filtered_search(index, q, 1, mask, offset=1)[0]] == full[1:2]
    assert filtered_search(index, q, 5, mask, offset=3)[0] == []
    cut = float(data[full[1]] @ q)
    assert [h.label for h in filtered_search(index, q, 10, mask, min_score=cut)[0]] == full[:2]
    assert filtered_search(index, q, 10, np.zeros(N, dtype=bool))[0] == []


def test_everything_allowed_is_the_plain_search(corpus: Any) -> None:
    index, data = corpus
    q = _queries(data, 1)[0]
    plain = index.search(q, 10)[0]
    assert filtered_search(index, q, 10, np.ones(N, dtype=bool))[0] == plain


def test_mask_shape_is_checked(corpus: Any) -> None:
    index, _ = corpus
    with pytest.raises(ValueError, match="mask must have shape"):
        filtered_search(index, np.ones(DIM, np.float32), 3, np.ones(N - 1, dtype=bool))


def test_switch_point_depends_on_where_the_vectors_are(corpus: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from handler.core import shards

    index, data = corpus
    ways: list[str] = []
    real = shards._exact
    monkeypatch.setattr(shards, "_exact", lambda *a: ways.append("exact") or real(*a))
    mask = np.zeros(N, dtype=bool)
    mask[: int(N * (FILTER_EXACT_BELOW + FILTER_EXACT_BELOW_HNSW_VECTORS) / 2)] = True  # between the two
    filtered_search(index, data[0], 5, mask)
    assert ways == []  # vectors only in hnswlib: the graph walk
    local = SearchIndex(index.manifest, index.shards.shards[0].index, index.items)
    local.shards.shards[0]._emb = data
    filtered_search(local, data[0], 5, mask)
    assert ways == ["exact"]


def test_exact_path_reads_local_embeddings_when_present(corpus: Any) -> None:
    index, _ = corpus
    other = SearchIndex(index.manifest, index.shards.shards[0].index, index.items)
    unit = np.eye(1, DIM, dtype=np.float32)
    other.shards.shards[0]._emb = np.repeat(
        unit, N, axis=0
    )  # every vector the same: exact ties, ranked by label
    mask = np.zeros(N, dtype=bool)
    mask[[9, 3, 7]] = True
    hits = filtered_search(other, unit[0], 3, mask)[0]
    assert [h.label for h in hits] == [3, 7, 9] and [h.score for h in hits] == [1.0] * 3


def test_filtered_index_counts_live_rows_only(corpus: Any) -> None:
    """A tombstoned row (a carried shard's deleted item) is never returned, so it is not counted."""
    from handler.core.filtered_search import FilteredIndex
    from handler.core.shards import Shard

    index, data = corpus
    hnsw = index.shards.shards[0].index
    tomb = SearchIndex(index.manifest, None, index.items, shards=[Shard(hnsw, 0, N, deleted=[1, 2], ef=16)])
    mask = np.zeros(N, dtype=bool)
    mask[:10] = True
    view = FilteredIndex(tomb, mask)
    assert view.count == 8
    assert len(view.search(data[0], 20)[0]) == 8
    assert FilteredIndex(index, mask).count == 10
