"""Near-duplicate groups of a whole collection (docs/formats.md, "duplicates.jsonl").

Computed once per index version by the builder from an HNSW graph, not by comparing every pair: each
vector's ``k`` nearest neighbours are looked up (batched, on all cores; a vector whose ``k``-th neighbour
is still a link is looked up again with twice as many), and two items are linked when their cosine
similarity is ``>= threshold``. A group is a **connected component** of those links (transitive: a ~ b
and b ~ c put a, b, c together even if a and c are further apart), so a group is found whole however
many copies it holds. Each group is then finalised from its member set alone
(:func:`finalise_group`): its links are its pairs ``>= threshold``, its representative the member with
the largest sum of link similarities (the most central one; ties: the lowest row), and every member's
score its exact cosine similarity to the representative (1.0 for itself). A group's score is the lowest
of its members' scores: with chains it can be below the threshold. Because a group depends only on its
members, a publish can update the previous version's groups (:mod:`handler.core.duplicate_update`).

Deterministic for a given index: hnswlib's search is, and groups and members are sorted (largest group
first, then by the representative's row; the representative first, then by score, then by row).
Torch-free: numpy + hnswlib.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handler.core.cpus import usable_cpus
from handler.core.dedupe import DEFAULT_THRESHOLD
from handler.core.errors import ArtifactError

__all__ = [
    "DEFAULT_DUPLICATE_NEIGHBOURS",
    "DEFAULT_DUPLICATE_THRESHOLD",
    "DUPLICATES_FILE",
    "DuplicateGroup",
    "duplicate_settings",
    "exact_components",
    "finalise_group",
    "find_duplicate_groups",
    "linked_neighbours",
    "parse_duplicates",
    "read_duplicates",
    "sort_groups",
    "write_duplicates",
]

DUPLICATES_FILE = "duplicates.jsonl"
#: cosine similarity at or above which two images count as near-duplicates (the same photo re-encoded,
#: resized or lightly edited): the query-time ``dedupe`` default of /search, measured on the demo data
#: (handler.core.dedupe.DEFAULT_THRESHOLD; docs/api.md, "Near-duplicates"). One number for both, so the
#: duplicate finder and dedupe agree on what a copy is.
DEFAULT_DUPLICATE_THRESHOLD = DEFAULT_THRESHOLD
#: neighbours looked up per item first (itself excluded); doubled while the farthest is still a link
DEFAULT_DUPLICATE_NEIGHBOURS = 16
_BATCH = 8192
_BLOCK = 512  # rows per block of a group's pairwise cosines (a [512, group size] matrix)


@dataclass(frozen=True)
class DuplicateGroup:
    """Rows of one group, its representative first, and each row's cosine to the representative."""

    labels: tuple[int, ...]
    scores: tuple[float, ...]

    @property
    def score(self) -> float:
        """The lowest member score (similarity to the representative)."""
        return min(self.scores[1:])


def duplicate_settings(
    threshold: float | None, k: int = DEFAULT_DUPLICATE_NEIGHBOURS
) -> dict[str, Any] | None:
    """The manifest's ``duplicates`` field for a build: ``{"threshold", "k"}``, or None (not computed)."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"duplicate threshold must be a number in (0, 1], got {threshold!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"duplicate neighbours k must be a positive integer, got {k!r}")
    return {"threshold": float(threshold), "k": k}


def _temporary_index(vectors: np.ndarray, threads: int) -> Any:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=vectors.shape[1])
    index.init_index(max_elements=len(vectors), M=16, ef_construction=100, random_seed=100)
    index.add_items(vectors, np.arange(len(vectors)), num_threads=threads)
    return index


def _knn(index: Any, queries: np.ndarray, want: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    for ef in (max(64, 2 * want), max(256, 8 * want), index.get_current_count()):
        index.set_ef(ef)
        try:
            labels, dist = index.knn_query(queries, k=want, num_threads=threads)
            return labels, dist
        except RuntimeError:  # fewer than ``want`` found (many identical vectors): search wider
            continue
    raise ArtifactError(f"HNSW search returned fewer than {want} neighbours")


def linked_neighbours(
    index: Any, queries: np.ndarray, threshold: float, k: int, threads: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every neighbour of each query in ``index`` with similarity ``>= threshold``, as far as the HNSW
    search finds it: ``(query position, label, similarity)``, each pair once, sorted. ``k`` neighbours are
    looked up; a query whose farthest one is still ``>= threshold`` is searched again with twice as many,
    so a large group is found whole. ``index``'s query ef is changed."""
    n = index.get_current_count()
    pos, want = np.arange(len(queries)), min(k, n)
    q_parts, l_parts, s_parts = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    while len(pos) and want:
        labels, dist = _knn(index, queries[pos], want, threads)
        sims = 1.0 - dist
        r, c = np.nonzero(sims >= threshold)
        q_parts.append(pos[r])
        l_parts.append(labels[r, c].astype(np.int64))
        s_parts.append(sims[r, c].astype(np.float64))
        if want >= n:
            break
        pos, want = pos[sims[:, -1] >= threshold], min(2 * want, n)
    q, lab, sim = np.concatenate(q_parts), np.concatenate(l_parts), np.concatenate(s_parts)
    key, first = np.unique(q * max(n, 1) + lab, return_index=True)
    return key // max(n, 1), key % max(n, 1), sim[first]


def _links(
    vectors: np.ndarray, index: Any, threshold: float, k: int, threads: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected links ``(a, b, similarity)`` with ``a < b``, each once, sorted by ``(a, b)``."""
    n = len(vectors)
    a_parts, b_parts, s_parts = [], [], []
    for start in range(0, n, _BATCH):
        rows = np.arange(start, min(start + _BATCH, n))
        q, b, s = linked_neighbours(index, vectors[rows], threshold, k + 1, threads)  # + the item itself
        a = rows[q]
        a_parts.append(np.minimum(a, b)[a != b])
        b_parts.append(np.maximum(a, b)[a != b])
        s_parts.append(s[a != b])
    a, b, s = np.concatenate(a_parts), np.concatenate(b_parts), np.concatenate(s_parts)
    key, first = np.unique(a * n + b, return_index=True)
    return key // n, key % n, s[first]


def _components(a: np.ndarray, b: np.ndarray) -> dict[int, list[int]]:
    """Union-find over the links: root (the lowest row) -> rows, for components of two or more."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    groups: dict[int, list[int]] = {}
    for x in sorted(set(a.tolist()) | set(b.tolist())):
        groups.setdefault(find(x), []).append(x)
    return groups


def find_duplicate_groups(
    vectors: np.ndarray,
    threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
    k: int = DEFAULT_DUPLICATE_NEIGHBOURS,
    *,
    index: Any | None = None,
    threads: int | None = None,
) -> list[DuplicateGroup]:
    """Near-duplicate groups of ``vectors`` (``[n, dim]``, L2-normalised; row = hnswlib label of
    ``index``, an hnswlib ``ip`` index over exactly these vectors; built here when None). ``index``'s
    query ef is changed. Groups of two or more, sorted as the module describes."""
    duplicate_settings(threshold, k)  # checks both
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(arr)
    if n < 2:
        return []
    threads = threads or usable_cpus()
    if index is None:
        index = _temporary_index(arr, threads)
    a, b, _ = _links(arr, index, float(threshold), k, threads)
    groups = [finalise_group(arr, members, float(threshold)) for members in _components(a, b).values()]
    return sort_groups(groups)


def _pair_sims(vectors: np.ndarray, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Blocks of the cosines among ``rows``: ``(start, [block, len(rows)])`` (float64, in [-1, 1])."""
    members = np.asarray(vectors[rows], dtype=np.float64)
    for start in range(0, len(rows), _BLOCK):
        yield start, np.clip(members[start : start + _BLOCK] @ members.T, -1.0, 1.0)


def finalise_group(vectors: np.ndarray, members: Iterable[int], threshold: float) -> DuplicateGroup:
    """A group from its member rows alone (so a group's output depends only on its member set): the links
    are its pairs with cosine ``>= threshold``; the representative has the largest sum of link similarities
    (ties: the lowest row); scores are cosines to it; the representative first, then by score, then row."""
    rows = np.asarray(sorted(set(members)), dtype=np.int64)
    strength = np.zeros(len(rows), dtype=np.float64)
    for start, sims in _pair_sims(vectors, rows):
        own = np.arange(len(sims))
        sims[own, start + own] = 0.0
        strength[start : start + len(sims)] = np.where(sims >= threshold, sims, 0.0).sum(axis=1)
    strength = np.round(strength, 6)  # equal sums (exact copies) stay equal: ties go to the lowest row
    rep = int(rows[np.lexsort((rows, -strength))[0]])
    sims = np.clip(np.asarray(vectors[rows], dtype=np.float64) @ np.asarray(vectors[rep], np.float64), -1, 1)
    sims[rows == rep] = 1.0
    order = np.lexsort((rows, -np.round(sims, 6), rows != rep))
    return DuplicateGroup(tuple(int(x) for x in rows[order]), tuple(round(float(x), 6) for x in sims[order]))


def exact_components(vectors: np.ndarray, members: Iterable[int], threshold: float) -> list[list[int]]:
    """The connected components (two or more rows) of ``members`` under "cosine ``>= threshold``",
    every pair compared: how a group that lost members is split."""
    rows = np.asarray(sorted(set(members)), dtype=np.int64)
    a_parts, b_parts = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for start, sims in _pair_sims(vectors, rows):
        r, c = np.nonzero(sims >= threshold)
        a_parts.append(rows[start + r])
        b_parts.append(rows[c])
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    linked = a != b
    return list(_components(a[linked], b[linked]).values())


def sort_groups(groups: list[DuplicateGroup]) -> list[DuplicateGroup]:
    """Largest group first, then by the representative's row."""
    return sorted(groups, key=lambda g: (-len(g.labels), g.labels[0]))


def write_duplicates(path: Path, groups: Iterable[DuplicateGroup], ids: Sequence[Any]) -> int:
    """Write ``duplicates.jsonl``: one group per line, ``{"items": [id, ...], "scores": [...], "score"}``
    (``ids[label]`` is a row's item id). Returns the number of groups."""
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for g in groups:
            row = {"items": [ids[x] for x in g.labels], "scores": list(g.scores), "score": g.score}
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
    return count


def read_duplicates(path: Path) -> list[dict[str, Any]]:
    """The groups of a ``duplicates.jsonl`` file (see :func:`parse_duplicates`)."""
    return parse_duplicates(path.read_text(encoding="utf-8"), str(path))


def parse_duplicates(text: str, where: str) -> list[dict[str, Any]]:
    """The groups of ``duplicates.jsonl`` content, in file order; :class:`ArtifactError` naming the line
    when one is not a group."""
    groups: list[dict[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ArtifactError(f"{where}: line {lineno} is not valid JSON ({e})") from None
        items, scores = (row.get("items"), row.get("scores")) if isinstance(row, dict) else (None, None)
        if (
            not isinstance(items, list)
            or not isinstance(scores, list)
            or len(items) < 2
            or len(items) != len(scores)
            or not isinstance(row.get("score"), (int, float))
        ):
            raise ArtifactError(f"{where}: line {lineno} is not a duplicate group")
        groups.append(row)
    return groups
