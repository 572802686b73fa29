"""handler.core.duplicates: near-duplicate groups from the HNSW graph equal the brute-force (every pair)
connected components; representatives, scores, order, the file format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import handler.core.duplicates as duplicates
from handler.core.duplicates import (
    DuplicateGroup,
    duplicate_settings,
    exact_components,
    finalise_group,
    find_duplicate_groups,
    parse_duplicates,
    read_duplicates,
    write_duplicates,
)
from handler.core.errors import ArtifactError
from tests.conftest import normalized_vectors


def brute_force_groups(vectors: np.ndarray, threshold: float) -> set[frozenset[int]]:
    """Connected components (two or more rows) of "cosine >= threshold" over every pair: O(n^2)."""
    sims = vectors.astype(np.float64) @ vectors.astype(np.float64).T
    linked = sims >= threshold
    np.fill_diagonal(linked, False)
    seen: set[int] = set()
    groups: set[frozenset[int]] = set()
    for start in range(len(vectors)):
        if start in seen or not linked[start].any():
            continue
        todo, members = [start], {start}
        while todo:
            x = todo.pop()
            for y in np.nonzero(linked[x])[0].tolist():
                if y not in members:
                    members.add(y)
                    todo.append(y)
        seen |= members
        groups.add(frozenset(members))
    return groups


def planted(n: int, dim: int, sizes: list[int], noise: float, seed: int = 0) -> np.ndarray:
    """``n`` random unit vectors, then groups of ``sizes`` noisy copies of some of them appended."""
    rng = np.random.default_rng(seed)
    base = normalized_vectors(n, dim, seed=seed)
    copies = []
    for i, size in enumerate(sizes):
        for _ in range(size - 1):
            v = base[i] + noise * rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
            copies.append(v / np.linalg.norm(v))
    return np.concatenate([base, np.asarray(copies, dtype=np.float32)]).astype(np.float32)


def as_sets(groups: list[DuplicateGroup]) -> set[frozenset[int]]:
    return {frozenset(g.labels) for g in groups}


def test_groups_equal_brute_force_on_planted_near_duplicates() -> None:
    vectors = planted(300, 64, [2, 3, 4, 5, 8, 2, 6], noise=0.15)
    expected = brute_force_groups(vectors, 0.95)
    assert len(expected) == 7 and sorted(len(g) for g in expected) == [2, 2, 3, 4, 5, 6, 8]
    assert as_sets(find_duplicate_groups(vectors, 0.95, threads=1)) == expected
    for threshold in (0.9, 0.99):  # looser and stricter
        assert as_sets(find_duplicate_groups(vectors, threshold, threads=1)) == brute_force_groups(
            vectors, threshold
        )


def test_a_group_larger_than_k_is_found_whole() -> None:
    """Components, not each item's k nearest: 40 copies with k=8 are one group."""
    vectors = planted(200, 32, [40, 3], noise=0.1, seed=3)
    groups = find_duplicate_groups(vectors, 0.95, k=8, threads=1)
    assert as_sets(groups) == brute_force_groups(vectors, 0.95)
    assert [len(g.labels) for g in groups] == [40, 3]


def test_identical_copies_and_the_given_index() -> None:
    import hnswlib

    vectors = normalized_vectors(100, 16, seed=5)
    vectors = np.concatenate([vectors, np.repeat(vectors[7:8], 8, axis=0)])  # 8 exact copies of row 7
    index = hnswlib.Index(space="ip", dim=16)
    index.init_index(max_elements=len(vectors), M=16, ef_construction=200, random_seed=100)
    index.add_items(vectors, np.arange(len(vectors)), num_threads=1)
    groups = find_duplicate_groups(vectors, 0.95, index=index, threads=1)
    assert [set(g.labels) for g in groups] == [{7, *range(100, 108)}]
    assert groups[0].labels[0] == 7 and groups[0].scores == (1.0,) * 9  # ties: the lowest row represents


def test_representative_scores_and_order_are_deterministic() -> None:
    vectors = planted(150, 48, [5, 5, 3, 2], noise=0.2, seed=9)
    groups = find_duplicate_groups(vectors, 0.95, threads=1)
    assert groups == find_duplicate_groups(vectors, 0.95, threads=2)
    assert [len(g.labels) for g in groups] == sorted((len(g.labels) for g in groups), reverse=True)
    five = [g for g in groups if len(g.labels) == 5]
    assert five[0].labels[0] < five[1].labels[0]  # same size: by the representative's row
    for g in groups:
        rep = vectors[g.labels[0]]
        assert g.scores[0] == 1.0 and list(g.scores[1:]) == sorted(g.scores[1:], reverse=True)
        exact = [float(vectors[x] @ rep) for x in g.labels[1:]]
        assert np.allclose(g.scores[1:], exact, atol=1e-5)
        assert g.score == min(g.scores[1:])
        # the representative is the most central member: the largest sum of similarities to the others
        sums = {x: sum(float(vectors[x] @ vectors[y]) for y in g.labels if y != x) for x in g.labels}
        assert sums[g.labels[0]] >= max(sums.values()) - 1e-3


def test_no_groups_and_small_inputs() -> None:
    assert find_duplicate_groups(normalized_vectors(200, 64, seed=1), 0.95, threads=1) == []
    assert find_duplicate_groups(np.zeros((0, 8), np.float32)) == []
    assert find_duplicate_groups(normalized_vectors(1, 8)) == []
    two = np.repeat(normalized_vectors(1, 8), 2, axis=0)
    assert find_duplicate_groups(two) == [DuplicateGroup((0, 1), (1.0, 1.0))]


@pytest.mark.parametrize("threshold", [0, -0.5, 1.5, True, "0.9", float("nan")])
def test_bad_threshold_is_refused(threshold: object) -> None:
    with pytest.raises(ValueError, match="threshold"):
        duplicate_settings(threshold)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        find_duplicate_groups(normalized_vectors(4, 8), threshold)  # type: ignore[arg-type]


def test_settings() -> None:
    assert duplicate_settings(None) is None
    assert duplicate_settings(0.9, 12) == {"threshold": 0.9, "k": 12}
    with pytest.raises(ValueError, match="k"):
        duplicate_settings(0.9, 0)


def test_file_round_trip_and_bad_lines(tmp_path: Path) -> None:
    groups = [DuplicateGroup((2, 0, 1), (1.0, 0.99, 0.97)), DuplicateGroup((3, 4), (1.0, 0.96))]
    path = tmp_path / "duplicates.jsonl"
    assert write_duplicates(path, groups, ["a", "b", "c", 4, "e"]) == 2
    assert read_duplicates(path) == [
        {"items": ["c", "a", "b"], "scores": [1.0, 0.99, 0.97], "score": 0.97},
        {"items": [4, "e"], "scores": [1.0, 0.96], "score": 0.96},
    ]
    for bad in (
        "{",
        '{"items": ["a"], "scores": [1.0], "score": 1}',
        '{"items": ["a", "b"], "score": 1}',
        "[]",
    ):
        with pytest.raises(ArtifactError, match="line 2"):
            parse_duplicates('{"items": ["a", "b"], "scores": [1, 0.99], "score": 0.99}\n' + bad, "f")


def test_groups_are_finalised_from_their_members_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """finalise_group / exact_components compare a group's members pairwise, block by block."""
    vectors = planted(60, 16, [12, 3], noise=0.15, seed=2)
    groups = find_duplicate_groups(vectors, 0.95, threads=1)
    assert [len(g.labels) for g in groups] == [12, 3]
    monkeypatch.setattr(duplicates, "_BLOCK", 5)
    assert find_duplicate_groups(vectors, 0.95, threads=1) == groups
    assert [finalise_group(vectors, reversed(g.labels), 0.95) for g in groups] == groups
    members = [*groups[0].labels, *groups[1].labels]
    assert sorted(exact_components(vectors, members, 0.95)) == sorted(sorted(g.labels) for g in groups)
