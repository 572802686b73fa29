"""Recall by construction: the smallest query ef at which a built HNSW shard reaches the target recall@10
against exact search, measured on a held-out sample (docs/formats.md, "Index").

The builder holds a random sample of the shard's rows out of the graph (:func:`held_out_rows`), calibrates,
then inserts them. Two kinds of queries, calibrated separately (the service searches image and "more like
this" queries at the image ef, text and raw-vector queries at the text ef; the shard's ``ef`` is the
larger):

* image: the held-out vectors themselves: points of the shard's own distribution that the graph has not
  seen, as a new photo of a known scene is;
* text-like: each held-out vector turned to cosine :data:`TEXT_COSINE` from itself, towards one direction
  shared by all (plus some noise): CLIP's text embeddings sit on one side of the image cone (the modality
  gap) with a best image cosine of ~0.3-0.5. These far queries need a much wider search than the near ones.

A shard too small to spare a sample (or an extended shard with few new rows) is calibrated on stand-ins:
stored vectors moved by Gaussian noise of the norm of the typical distance to their nearest other vector,
renormalised (harder than held-out points: the noise adds to the spread, so the ef is conservative). A query
that is a stored vector would be found through its own graph node (optimistic); uniform random queries would
say nothing about clustered data. Recall counts a hit as correct when its score reaches the exact k-th score
(ties, duplicate images), so an exact search has recall 1.0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from handler.core.index_format import QUERY_KINDS

__all__ = [
    "DEFAULT_TARGET_RECALL",
    "Calibration",
    "calibrate",
    "exact_topk_scores",
    "held_out_rows",
    "text_like",
]

DEFAULT_TARGET_RECALL = 0.99
QUERIES = 2000  # held-out rows per shard (at most a tenth of its rows): each an image and a text query
K = 10
EF_MIN = 10
EF_MAX = 4096  # beyond it the shard is not worth searching with HNSW: the ladder stops and reports
TEXT_COSINE = 0.5
HELD_OUT_MIN = 100
Z = 2.0  # one-sided ~98%: the sample's recall must clear the target by this many standard errors
_CHUNK = 16_384


@dataclass(frozen=True)
class Calibration:
    """``by_query``: per query kind, its smallest ef reaching the target and the recall measured there;
    ``ef``: the largest of those, ``recall`` the worst."""

    ef: int
    recall: float
    queries: int
    reached: bool  # False: no ef up to EF_MAX (or the shard size) reached the target
    by_query: dict[str, tuple[int, float]]


def held_out_rows(count: int, seed: int = 0, queries: int = QUERIES) -> np.ndarray:
    """Sorted rows (of ``count``) to hold out of the graph for calibration: ``queries`` of them, at most a
    tenth of the rows; empty when that is under :data:`HELD_OUT_MIN` (the stand-in queries are used)."""
    n = min(queries, count // 10)
    if n < HELD_OUT_MIN:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(count, size=n, replace=False)).astype(np.int64)


def exact_topk_scores(
    queries: np.ndarray, data: np.ndarray, k: int, skip: np.ndarray | None = None
) -> np.ndarray:
    """Exact top-``k`` inner-product scores per query, descending (chunked over ``data``); ``skip``: a
    boolean mask of rows of ``data`` left out."""
    best = np.full((len(queries), k), -np.inf, dtype=np.float32)
    for s in range(0, len(data), _CHUNK):
        sc = queries @ np.asarray(data[s : s + _CHUNK], dtype=np.float32).T
        if skip is not None:
            sc[:, skip[s : s + _CHUNK]] = -np.inf
        kk = min(k, sc.shape[1])
        part = -np.partition(-sc, kk - 1, axis=1)[:, :kk]
        best = -np.sort(-np.concatenate([best, part], axis=1), axis=1)[:, :k]
    return best


def _unit(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=-1, keepdims=True), dtype=np.float32)


def text_like(base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Text-like queries made from unit vectors ``base`` (see the module docstring)."""
    shared = _unit(rng.standard_normal((1, base.shape[1]), dtype=np.float32))
    away = shared + 0.5 * _unit(rng.standard_normal(base.shape, dtype=np.float32))
    away -= np.sum(away * base, axis=1, keepdims=True) * base  # orthogonal to each base vector
    return _unit(TEXT_COSINE * base + np.sqrt(1 - TEXT_COSINE**2) * _unit(away))


def _queries(data: np.ndarray, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    sample = np.sort(rng.choice(len(data), size=n, replace=False))
    base = np.asarray(data[sample], dtype=np.float32)
    probe = base[: min(n, 200)]
    top2 = exact_topk_scores(probe, data, 2)  # [self (or a duplicate), nearest other]
    nearest = np.clip(np.median(top2[:, 1]) if top2.shape[1] > 1 else 0.0, -1.0, 1.0)
    distance = float(np.sqrt(max(2.0 - 2.0 * nearest, 1e-6)))
    noise = rng.standard_normal(base.shape).astype(np.float32)
    noise *= distance / np.linalg.norm(noise, axis=1, keepdims=True)
    if n == 1:
        return {"image": _unit(base + noise)}
    half = n // 2
    return {"image": _unit(base[:half] + noise[:half]), "text": text_like(base[half:], rng)}


def calibrate(
    index: Any,
    data: np.ndarray,
    target: float = DEFAULT_TARGET_RECALL,
    *,
    fixed_ef: int | None = None,
    held_out: np.ndarray | None = None,
    queries: int = QUERIES,
    threads: int = 1,
    seed: int = 0,
) -> Calibration:
    """Per query kind, the smallest ef of ``index`` (an hnswlib index over ``data``, labels = rows) whose
    recall@10 on the sample reaches ``target`` with :data:`Z` standard errors to spare (so that it holds on
    other queries too): doubling from :data:`EF_MIN`, then bisecting to within ~10%. ``held_out``: rows of
    ``data`` not (yet) in ``index``, the queries (:func:`held_out_rows`; empty or None: stand-ins).
    ``fixed_ef``: only measure the recall at that ef. An empty shard needs nothing: ef :data:`EF_MIN`,
    recall 1.0."""
    held = np.zeros(0, dtype=np.int64) if held_out is None else np.asarray(held_out, dtype=np.int64)
    skip = None
    if len(held):
        skip = np.zeros(len(data), dtype=bool)
        skip[held] = True
    n = len(data) - len(held)
    if n <= 0:
        ef0 = fixed_ef or EF_MIN
        return Calibration(ef0, 1.0, 0, True, {kind: (ef0, 1.0) for kind in QUERY_KINDS})
    rng = np.random.default_rng(seed)
    if skip is None:
        sets = _queries(data, min(queries, n), rng)
    else:
        base = np.asarray(data[held], dtype=np.float32)
        sets = {"image": np.ascontiguousarray(base), "text": text_like(base, rng)}
    k = min(K, n)
    by_query: dict[str, tuple[int, float]] = {}
    for kind, q in sets.items():
        kth = exact_topk_scores(q, data, k, skip)[:, k - 1 : k] - 1e-5  # float32 rounding slack

        def measure(ef: int, q: np.ndarray = q, kth: np.ndarray = kth) -> np.ndarray:
            """Recall@k of each query at ``ef``."""
            index.set_ef(max(ef, k))
            try:
                _, dist = index.knn_query(q, k=k, num_threads=threads)
            except RuntimeError:  # fewer than k found: the search is too narrow
                return np.zeros(len(q))
            hits: np.ndarray = np.mean((1.0 - dist) >= kth, axis=1)
            return hits

        if fixed_ef is not None:
            by_query[kind] = (fixed_ef, float(np.mean(measure(fixed_ef))))
        else:
            by_query[kind] = _smallest_ef(measure, n, target)
    if "text" not in by_query:  # a one-row shard: one query
        by_query["text"] = by_query["image"]
    ef = max(e for e, _ in by_query.values())
    recall = min(r for _, r in by_query.values())
    return Calibration(ef, recall, sum(map(len, sets.values())), recall >= target, by_query)


def _clears(recalls: np.ndarray, target: float) -> bool:
    """Whether per-query ``recalls`` reach ``target`` with :data:`Z` standard errors to spare: the smallest
    ef that merely reaches it on the sample falls short on other queries about half the time."""
    spread = float(np.std(recalls, ddof=1)) / np.sqrt(len(recalls)) if len(recalls) > 1 else 0.0
    return float(np.mean(recalls)) - Z * spread >= target


def _smallest_ef(measure: Callable[[int], np.ndarray], n: int, target: float) -> tuple[int, float]:
    """The smallest ef whose per-query recalls (``measure``) clear ``target`` (to within ~10%), or the
    widest tried; with the mean recall there."""
    tried: dict[int, bool] = {}
    mean: dict[int, float] = {}

    def clears(ef: int) -> bool:
        recalls = measure(ef)
        mean[ef] = float(np.mean(recalls))
        tried[ef] = _clears(recalls, target)
        return tried[ef]

    ef, lo = EF_MIN, 0
    while not clears(ef) and ef < min(EF_MAX, n):
        lo, ef = ef, min(ef * 2, EF_MAX, max(n, EF_MIN))
    if not tried[ef] or lo == 0:  # not reached; or reached at EF_MIN (the service raises ef to k)
        return ef, mean[ef]
    hi = ef
    while hi - lo > max(2, lo // 10):
        mid = (lo + hi) // 2
        if clears(mid):
            hi = mid
        else:
            lo = mid
    return hi, mean[hi]
