"""Near-duplicate groups of a new version from the previous version's groups and the rows that changed,
equal to :func:`handler.core.duplicates.find_duplicate_groups` of the whole collection (docs/formats.md,
"duplicates.jsonl") at a cost that grows with the change.

Groups are the connected components of the "cosine ``>= threshold``" graph. Links between unchanged items
are the previous version's, so the previous groups restricted to the unchanged items are the components
of that graph restricted to them: a group that lost members (deleted or changed items) is split by
comparing its surviving members pairwise; an intact one is kept. Then every added or changed row is
searched against the whole new collection (all its neighbours ``>= threshold``: exactly, blockwise, or
with a given search such as the version's HNSW shards), and its links merge components. Each resulting
group is finalised from its member set alone (:func:`~handler.core.duplicates.finalise_group`), as the
full computation does, so it does not depend on the path that found it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from handler.core.duplicates import (
    DuplicateGroup,
    exact_components,
    finalise_group,
    sort_groups,
)

__all__ = ["Neighbours", "changed_neighbours", "update_duplicate_groups"]

#: ``(vectors, rows, threshold) -> (row, other)``: every link of the given rows in the whole collection
Neighbours = Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]]

#: changed rows compared with the whole collection per block (bounds the [block, n] cosine matrix)
_QUERY_BLOCK = 256
_ROW_BLOCK = 65_536


def changed_neighbours(
    vectors: np.ndarray, rows: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Every link ``(row, other)`` of the given ``rows`` (cosine ``>= threshold``, ``other != row``) in the
    whole of ``vectors``: exact, ``len(rows) * n`` dot products."""
    a_parts, b_parts = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for q in range(0, len(rows), _QUERY_BLOCK):
        query = vectors[rows[q : q + _QUERY_BLOCK]]
        for start in range(0, len(vectors), _ROW_BLOCK):
            sims = vectors[start : start + _ROW_BLOCK] @ query.T  # [block rows, queries]
            r, c = np.nonzero(sims >= threshold)
            a_parts.append(rows[q + c])
            b_parts.append(start + r.astype(np.int64))
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    return a[a != b], b[a != b]


class _Union:
    """Union-find over the rows it has seen (the lowest row is a set's root)."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def join(self, x: int, y: int) -> None:
        self.parent.setdefault(x, x)
        self.parent.setdefault(y, y)
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)

    def sets(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for x in sorted(self.parent):
            out.setdefault(self.find(x), []).append(x)
        return [rows for rows in out.values() if len(rows) > 1]


def update_duplicate_groups(
    vectors: np.ndarray,
    ids: Sequence[Hashable],
    previous: Sequence[Sequence[Any]],
    unchanged: np.ndarray,
    threshold: float,
    neighbours: Neighbours | None = None,
) -> list[DuplicateGroup]:
    """The groups of ``vectors`` (``[n, dim]``, L2-normalised; ``ids[row]`` a row's item id) given the
    previous version's groups (``previous``: each group's item ids, as ``duplicates.jsonl`` lists them)
    and ``unchanged`` (bool per row: the item and its vector were in the previous version). The
    previous groups must have been found with the same ``threshold``. ``neighbours`` finds the changed
    rows' links (default :func:`changed_neighbours`: exact, ``changed * n`` dot products)."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    row_of = {item_id: i for i, item_id in enumerate(ids)}
    union = _Union()
    for items in previous:
        rows = [row_of[x] for x in items if x in row_of and unchanged[row_of[x]]]
        parts = [rows] if len(rows) == len(items) else exact_components(arr, rows, threshold)
        for part in parts:
            for x in part[1:]:
                union.join(part[0], x)
    changed = np.flatnonzero(~np.asarray(unchanged, dtype=bool)).astype(np.int64)
    a, b = (neighbours or changed_neighbours)(arr, changed, threshold)
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        union.join(x, y)
    return sort_groups([finalise_group(arr, rows, threshold) for rows in union.sets()])
