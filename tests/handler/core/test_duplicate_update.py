"""handler.core.duplicate_update: groups updated from the previous version's equal the groups found over the
whole new collection (adds, deletes, changes; a change that splits a chain, an add that merges two
groups), and only the added/changed rows are searched."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import handler.core.duplicate_update as duplicate_update
import handler.core.duplicates as duplicates
from handler.core.duplicate_update import update_duplicate_groups
from handler.core.duplicates import DuplicateGroup, find_duplicate_groups
from tests.conftest import normalized_vectors
from tests.handler.core.test_duplicates import as_sets, brute_force_groups, planted

T = 0.95  # cos 18.2 degrees


def arc(dim: int, seed: int, degrees: list[float]) -> np.ndarray:
    """Unit vectors at ``degrees`` along one great circle: 15 degrees apart links, 30 does not."""
    base = normalized_vectors(2, dim, seed=seed).astype(np.float64)
    u = base[0]
    w = base[1] - (base[1] @ u) * u
    w /= np.linalg.norm(w)
    rad = np.radians(degrees)
    return (np.cos(rad)[:, None] * u + np.sin(rad)[:, None] * w).astype(np.float32)


def previous_of(groups: list[DuplicateGroup], ids: list[Any]) -> list[list[Any]]:
    return [[ids[x] for x in g.labels] for g in groups]


def change(
    vectors: np.ndarray, ids: list[Any], delete: set[Any], replace: dict[Any, np.ndarray], add: np.ndarray
) -> tuple[np.ndarray, list[Any], np.ndarray]:
    """The next version: rows of ``delete`` gone, ``replace`` given new vectors, ``add`` appended (ids
    ``new-0``...). Returns vectors, ids and the rows unchanged since the previous version."""
    rows = [i for i, x in enumerate(ids) if x not in delete]
    new = vectors[rows].copy()
    new_ids = [ids[i] for i in rows]
    unchanged = np.ones(len(rows) + len(add), dtype=bool)
    for r, x in enumerate(new_ids):
        if x in replace:
            new[r], unchanged[r] = replace[x], False
    unchanged[len(rows) :] = False
    out = np.concatenate([new, add]).astype(np.float32)
    return out, new_ids + [f"new-{i}" for i in range(len(add))], unchanged


def scenario() -> tuple[np.ndarray, list[Any], np.ndarray, list[Any], np.ndarray]:
    chain = arc(32, 11, [0, 15, 30, 45, 60])  # one group through a chain; 30 degrees is its bridge
    pair_a = arc(32, 12, [0, 10])
    pair_b = arc(32, 12, [34, 44])  # 24 degrees from pair_a: two groups until something sits between
    old = np.concatenate([planted(150, 32, [4, 3, 5, 2], noise=0.15, seed=2), chain, pair_a, pair_b])
    ids: list[Any] = [f"img-{i}" if i % 3 else i for i in range(len(old))]
    n = len(old)
    chain_ids = ids[n - 9 : n - 4]
    # deleted: a planted copy (its group shrinks) and a lone row; changed: the chain's bridge (split in
    # two), the representative of a planted group (moved far away) and a lone row (moved onto a copy)
    groups = find_duplicate_groups(old, T, threads=1)
    big = next(g for g in groups if len(g.labels) == 5)
    delete = {ids[next(g for g in groups if len(g.labels) == 4).labels[1]], ids[100]}
    replace = {
        chain_ids[2]: normalized_vectors(1, 32, seed=99)[0],
        ids[big.labels[0]]: normalized_vectors(1, 32, seed=98)[0],
        ids[120]: old[big.labels[2]],
    }
    add = np.concatenate([arc(32, 12, [22]), old[[5, 5]], normalized_vectors(3, 32, seed=97)])
    new, new_ids, unchanged = change(old, ids, delete, replace, add)
    return old, ids, new, new_ids, unchanged


def test_update_equals_the_full_computation_of_the_new_collection() -> None:
    old, ids, new, new_ids, unchanged = scenario()
    previous = find_duplicate_groups(old, T, threads=1)
    full = find_duplicate_groups(new, T, threads=1)
    assert as_sets(full) == brute_force_groups(new, T)  # HNSW is exact at this size
    updated = update_duplicate_groups(new, new_ids, previous_of(previous, ids), unchanged, T)
    assert updated == full  # members, representatives, scores and order
    sets = [{new_ids[x] for x in g} for g in as_sets(full)]
    n = len(old)
    assert {ids[n - 9], ids[n - 8]} in sets and {ids[n - 6], ids[n - 5]} in sets  # the chain split
    assert {*ids[n - 4 :], "new-0"} in sets  # the two pairs merged by the added row between them
    assert not any(ids[n - 7] in s for s in sets)  # the changed bridge is alone now
    assert [len(g.labels) for g in previous] != [len(g.labels) for g in full]


def test_only_added_and_changed_rows_are_searched(monkeypatch: pytest.MonkeyPatch) -> None:
    old, ids, new, new_ids, unchanged = scenario()
    previous = previous_of(find_duplicate_groups(old, T, threads=1), ids)
    searched: list[int] = []
    real = duplicate_update.changed_neighbours

    def spy(vectors: np.ndarray, rows: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        searched.extend(rows.tolist())
        return real(vectors, rows, threshold)

    def no_knn(*args: object, **kwargs: object) -> None:
        raise AssertionError("the whole collection was searched")

    monkeypatch.setattr(duplicate_update, "changed_neighbours", spy)
    monkeypatch.setattr(duplicates, "_knn", no_knn)
    update_duplicate_groups(new, new_ids, previous, unchanged, T)
    assert sorted(searched) == np.flatnonzero(~unchanged).tolist()
    assert len(searched) == 9 < len(new) // 10


def test_no_change_keeps_the_groups_and_everything_new_finds_them_all() -> None:
    old = planted(120, 16, [3, 2, 6], noise=0.15, seed=8)
    ids = list(range(len(old)))
    groups = find_duplicate_groups(old, T, threads=1)
    keep = np.ones(len(old), dtype=bool)
    assert update_duplicate_groups(old, ids, previous_of(groups, ids), keep, T) == groups
    assert update_duplicate_groups(old, ids, [], ~keep, T) == groups  # nothing carried: all searched
    assert update_duplicate_groups(old[:0], [], [], keep[:0], T) == []
