"""Near-duplicate collapse of ranked results (issue 17 #3, ``dedupe`` on /search), exclusion of id terms."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from handler.core import dedupe
from handler.core.dedupe import MAX_CANDIDATES, collapse, ranked
from handler.core.search import Hit, SearchIndex

DIM = 16


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def make_index(vectors: np.ndarray) -> SearchIndex:
    import hnswlib

    hnsw = hnswlib.Index(space="ip", dim=vectors.shape[1])
    hnsw.init_index(max_elements=len(vectors), ef_construction=200, M=16)
    hnsw.add_items(vectors, np.arange(len(vectors)), num_threads=1)
    manifest = {"version": "v1", "dim": vectors.shape[1], "count": len(vectors), "model_fingerprint": "x"}
    return SearchIndex(manifest, hnsw, [{"id": f"item{i}"} for i in range(len(vectors))])


def collection(copies: int, distinct: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, query): ``copies`` near-identical vectors closest to the query, then ``distinct`` others."""
    rng = np.random.default_rng(seed)
    query = _unit(rng.normal(size=DIM))
    base = _unit(query + 0.3 * rng.normal(size=DIM))
    dupes = _unit(base + 0.001 * rng.normal(size=(copies, DIM)))
    others = _unit(query + 1.2 * rng.normal(size=(distinct, DIM)))
    return np.concatenate([dupes, others]), query


def test_collapse_keeps_the_first_of_each_group_and_absorbs_the_rest() -> None:
    e = np.eye(4, dtype=np.float32)
    vectors = np.stack([e[0], e[1], _unit(e[0] + 0.01 * e[2]), e[2], _unit(e[1] + 0.01 * e[3]), e[3]])
    hits = [Hit(i, 1.0 - i / 10, {"id": i}) for i in range(6)]
    groups = collapse(hits, vectors, 0.99, limit=10)
    assert [(g.hit.label, [d.label for d in g.duplicates]) for g in groups] == [
        (0, [2]),
        (1, [4]),
        (3, []),
        (5, []),
    ]
    # a full page still absorbs the later duplicates of its results, but keeps no more results
    groups = collapse(hits, vectors, 0.99, limit=2)
    assert [(g.hit.label, [d.label for d in g.duplicates]) for g in groups] == [(0, [2]), (1, [4])]
    # a duplicate joins the result it is most similar to
    vectors2 = np.stack([e[0], _unit(e[0] + 0.8 * e[1]), _unit(e[0] + 0.6 * e[1])])  # 2: 0.86 to 0, 0.99 to 1
    groups = collapse(hits[:3], vectors2, 0.85, limit=5)
    assert [(g.hit.label, [d.label for d in g.duplicates]) for g in groups] == [(0, []), (1, [2])]


def test_ranked_without_dedupe_is_the_index_search() -> None:
    vectors, query = collection(3, 60)
    idx = make_index(vectors)
    plain = idx.search(query, 7, 2)[0]
    assert [r.hit.label for r in ranked(idx, query, 7, 2)] == [h.label for h in plain]
    assert all(r.duplicates == [] for r in ranked(idx, query, 7, 2))
    top = [h.label for h in idx.search(query, 12)[0]]
    out = [r.hit.label for r in ranked(idx, query, 5, 3, exclude=frozenset(top[:2]))]
    assert out == top[2:][3:8]


def test_dedupe_collapses_copies_and_still_returns_k_results() -> None:
    vectors, query = collection(8, 60)
    idx = make_index(vectors)
    assert {h.label for h in idx.search(query, 8)[0]} == set(range(8))  # the copies fill the top 8
    out = ranked(idx, query, 10, dedupe=0.97)
    assert len(out) == 10
    assert out[0].hit.label in range(8) and {d.label for d in out[0].duplicates} == set(range(8)) - {
        out[0].hit.label
    }
    assert all(r.hit.label >= 8 and not r.duplicates for r in out[1:])
    scores = [r.hit.score for r in out]
    assert scores == sorted(scores, reverse=True)
    page = ranked(idx, query, 5, 5, dedupe=0.97)  # paging over the collapsed list
    assert [r.hit.label for r in page] == [r.hit.label for r in out[5:10]]


def test_dedupe_fetches_more_candidates_when_copies_fill_the_first_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vectors, query = collection(300, 40)
    idx = make_index(vectors)
    asked: list[int] = []
    search = idx.search

    def counting(vector: Any, k: int, *args: Any, **kwargs: Any) -> Any:
        asked.append(k)
        return search(vector, k, *args, **kwargs)

    monkeypatch.setattr(idx, "search", counting)
    out = ranked(idx, query, 5, dedupe=0.97)
    assert len(out) == 5 and len(out[0].duplicates) == 299
    assert len(asked) >= 2 and asked == sorted(asked)  # rounds grow
    assert max(asked) <= MAX_CANDIDATES


def test_dedupe_candidates_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    vectors, query = collection(60, 30)
    idx = make_index(vectors)
    monkeypatch.setattr(dedupe, "MAX_CANDIDATES", 40)
    out = ranked(idx, query, 5, dedupe=0.97)
    assert len(out) == 1 and len(out[0].duplicates) == 39  # only 40 candidates looked at: fewer than k


def test_dedupe_honours_min_score_and_exclude() -> None:
    vectors, query = collection(8, 60)
    idx = make_index(vectors)
    all_hits = idx.search(query, 68)[0]
    cut = all_hits[20].score
    out = ranked(idx, query, 50, min_score=cut, dedupe=0.97)
    assert all(r.hit.score >= cut for r in out) and len(out) == 21 - 7
    out = ranked(idx, query, 3, exclude=frozenset(range(8)), dedupe=0.97)
    assert all(r.hit.label >= 8 for r in out) and len(out) == 3
    assert ranked(make_index(vectors[:1]), query, 3, dedupe=0.97)[0].duplicates == []
