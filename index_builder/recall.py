"""Recall by construction: the smallest query ef at which a built HNSW shard reaches the target recall@10
against exact search, measured on held-out-like queries (docs/formats.md, "Index").

Queries, from a random sample of the shard's own vectors, two kinds (each must reach the target):

* image-like: each moved by Gaussian noise of the norm of the typical distance to its nearest other vector
  (the median over the sample), renormalised: points of the shard's distribution that are not in the index,
  as a new photo of a known scene would be;
* text-like: each turned to cosine :data:`TEXT_COSINE` from itself, towards one direction shared by all
  (plus some noise): CLIP's text embeddings sit on one side of the image cone (the modality gap) with a best
  image cosine of ~0.3-0.5. These far queries need a wider search than the near ones.

A query that is a stored vector would be found through its own graph node (optimistic); uniform random
queries would say nothing about clustered data. Recall counts a hit as correct when its score reaches the
exact k-th score (ties, duplicate images), so an exact search has recall 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DEFAULT_TARGET_RECALL", "Calibration", "calibrate", "exact_topk_scores"]

DEFAULT_TARGET_RECALL = 0.99
QUERIES = 1000
K = 10
EF_MIN = 10
EF_MAX = 4096  # beyond it the shard is not worth searching with HNSW: the ladder stops and reports
TEXT_COSINE = 0.5
_CHUNK = 16_384


@dataclass(frozen=True)
class Calibration:
    ef: int
    recall: float
    queries: int
    reached: bool  # False: no ef up to EF_MAX (or the shard size) reached the target


def exact_topk_scores(queries: np.ndarray, data: np.ndarray, k: int) -> np.ndarray:
    """Exact top-``k`` inner-product scores per query, descending (chunked over ``data``)."""
    best = np.full((len(queries), k), -np.inf, dtype=np.float32)
    for s in range(0, len(data), _CHUNK):
        sc = queries @ np.asarray(data[s : s + _CHUNK], dtype=np.float32).T
        kk = min(k, sc.shape[1])
        part = -np.partition(-sc, kk - 1, axis=1)[:, :kk]
        best = -np.sort(-np.concatenate([best, part], axis=1), axis=1)[:, :k]
    return best


def _unit(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=-1, keepdims=True), dtype=np.float32)


def _text_like(base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    shared = _unit(rng.standard_normal((1, base.shape[1]), dtype=np.float32))
    away = shared + 0.5 * _unit(rng.standard_normal(base.shape, dtype=np.float32))
    away -= np.sum(away * base, axis=1, keepdims=True) * base  # orthogonal to each base vector
    return _unit(TEXT_COSINE * base + np.sqrt(1 - TEXT_COSINE**2) * _unit(away))


def _queries(data: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    sample = np.sort(rng.choice(len(data), size=n, replace=False))
    base = np.asarray(data[sample], dtype=np.float32)
    probe = base[: min(n, 200)]
    top2 = exact_topk_scores(probe, data, 2)  # [self (or a duplicate), nearest other]
    nearest = np.clip(np.median(top2[:, 1]) if top2.shape[1] > 1 else 0.0, -1.0, 1.0)
    distance = float(np.sqrt(max(2.0 - 2.0 * nearest, 1e-6)))
    noise = rng.standard_normal(base.shape).astype(np.float32)
    noise *= distance / np.linalg.norm(noise, axis=1, keepdims=True)
    half = max(1, n // 2)
    return (
        [_unit(base[:half] + noise[:half]), _text_like(base[half:], rng)] if n > 1 else [_unit(base + noise)]
    )


def calibrate(
    index: Any,
    data: np.ndarray,
    target: float = DEFAULT_TARGET_RECALL,
    *,
    fixed_ef: int | None = None,
    queries: int = QUERIES,
    threads: int = 1,
    seed: int = 0,
) -> Calibration:
    """The smallest ef of ``index`` (an hnswlib index over ``data``, labels = rows) reaching ``target``
    recall@10: doubling from :data:`EF_MIN`, then bisecting to within ~10%. ``fixed_ef``: only measure the
    recall at that ef. An empty shard needs nothing: ef :data:`EF_MIN`, recall 1.0."""
    n = len(data)
    if n == 0:
        return Calibration(fixed_ef or EF_MIN, 1.0, 0, True)
    rng = np.random.default_rng(seed)
    sets = _queries(data, min(queries, n), rng)
    k = min(K, n)
    kths = [exact_topk_scores(q, data, k)[:, k - 1 : k] - 1e-5 for q in sets]  # float32 rounding slack

    def measure(ef: int) -> float:
        index.set_ef(max(ef, k))
        worst = 1.0
        for q, kth in zip(sets, kths, strict=True):
            try:
                _, dist = index.knn_query(q, k=k, num_threads=threads)
            except RuntimeError:  # fewer than k found: the search is too narrow
                return 0.0
            worst = min(worst, float(np.mean((1.0 - dist) >= kth)))
        return worst

    if fixed_ef is not None:
        r = measure(fixed_ef)
        return Calibration(fixed_ef, r, sum(map(len, sets)), r >= target)
    tried: dict[int, float] = {}
    ef, lo = EF_MIN, 0
    while True:
        tried[ef] = measure(ef)
        if tried[ef] >= target or ef >= min(EF_MAX, n):
            break
        lo, ef = ef, min(ef * 2, EF_MAX, max(n, EF_MIN))
    if tried[ef] < target:
        return Calibration(ef, tried[ef], sum(map(len, sets)), False)
    hi = ef
    if lo == 0:
        return Calibration(
            hi, tried[hi], sum(map(len, sets)), True
        )  # below EF_MIN the service raises ef to k anyway
    while hi - lo > max(2, lo // 10):
        mid = (lo + hi) // 2
        tried[mid] = measure(mid)
        if tried[mid] >= target:
            hi = mid
        else:
            lo = mid
    return Calibration(hi, tried[hi], sum(map(len, sets)), True)
