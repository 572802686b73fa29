"""Synthetic embedding collections and exact ground truth for the search benchmarks.

Two distributions of 512-d L2-normalised vectors:

* ``clustered``: 1000 Gaussian clusters of equal expected size on the sphere, isotropic noise (noise norm
  :data:`SPREAD` of the unit centre: within-cluster cosine ~0.8, query-to-centre ~0.9);
* ``powerlaw``: cluster sizes following a power law (a few huge clusters, a long tail of tiny ones, as in
  photo libraries: many shots of the same few scenes) and anisotropic noise (each cluster spreads along its
  own few directions far more than along the others), which makes neighbourhoods uneven for HNSW.

Queries come from the same distribution and are not in the index.
"""

from __future__ import annotations

import numpy as np

DIM = 512
CLUSTERS = 1000
SPREAD = 0.5
POWER = 1.1  # cluster rank r gets a share proportional to r**-POWER
ANISOTROPY = 0.75  # noise scale of direction j (sorted) ~ (j + 1) ** -ANISOTROPY, per-cluster ordering

__all__ = ["CLUSTERS", "DIM", "SPREAD", "centres", "clustered", "exact_topk", "make", "powerlaw", "recall"]


def centres(seed: int = 0, n: int = CLUSTERS, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((n, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    return c


def clustered(n: int, seed: int, centres: np.ndarray, chunk: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = centres[rng.integers(0, len(centres), m)]
        x += (SPREAD / np.sqrt(centres.shape[1])) * rng.standard_normal(
            (m, centres.shape[1]), dtype=np.float32
        )
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s : s + m] = x
    return out


def powerlaw(n: int, seed: int, centres: np.ndarray, chunk: int = 100_000) -> np.ndarray:
    """Power-law cluster sizes, anisotropic noise (see the module docstring). The per-cluster noise
    spectra depend only on the centres (not on ``seed``), so queries and data share them."""
    k, dim = centres.shape
    shares = np.arange(1, k + 1, dtype=np.float64) ** -POWER
    shares /= shares.sum()
    spec_rng = np.random.default_rng(12345)
    spectrum = (np.arange(1, dim + 1, dtype=np.float32) ** -ANISOTROPY).astype(np.float32)
    spectrum *= SPREAD * np.sqrt(dim) / np.linalg.norm(spectrum) / np.sqrt(dim)  # same noise norm as above
    order = np.argsort(spec_rng.random((k, dim)), axis=1)  # cluster c stretches along its own directions
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        which = rng.choice(k, size=m, p=shares)
        x = centres[which] + spectrum[order[which]] * rng.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s : s + m] = x
    return out


def make(kind: str, n: int, seed: int, c: np.ndarray) -> np.ndarray:
    if kind == "clustered":
        return clustered(n, seed, c)
    if kind == "powerlaw":
        return powerlaw(n, seed, c)
    raise ValueError(f"unknown distribution {kind!r}")


def exact_topk(queries: np.ndarray, data: np.ndarray, k: int, chunk: int = 50_000) -> np.ndarray:
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for s in range(0, len(data), chunk):
        sc = queries @ data[s : s + chunk].T
        kk = min(k, sc.shape[1])
        part = np.argpartition(-sc, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([best_s, np.take_along_axis(sc, part, 1)], axis=1)
        cand_i = np.concatenate([best_i, part + s], axis=1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i


def recall(found: list[list[int]] | np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean(
            [len(set(map(int, f)) & set(map(int, t))) / len(t) for f, t in zip(found, truth, strict=True)]
        )
    )
