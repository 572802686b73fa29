"""Synthetic precomputed-embedding collections for the scale benchmarks (``import-embeddings`` input).

:func:`write_clip_retrieval` writes N clustered, L2-normalised vectors (float16, as clip-retrieval's inference
writes them) in its layout, ``img_emb/img_emb_<N>.npy`` + ``metadata/metadata_<N>.parquet`` (needs pyarrow);
:func:`write_npy_jsonl` writes one ``.npy`` + ids JSONL. Both are vectorised: ~seconds for 1M x 512.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

__all__ = ["clustered_vectors", "write_clip_retrieval", "write_npy_jsonl"]


def clustered_vectors(
    n: int, dim: int = 512, *, clusters: int = 1000, spread: float = 0.5, seed: int = 0, chunk: int = 100_000
) -> np.ndarray:
    """float32 ``[n, dim]`` around ``clusters`` random unit centres (noise norm ~``spread``), normalised
    (the distribution of bench/vectors.py)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = centres[rng.integers(0, clusters, m)]
        x += (spread / np.sqrt(dim)) * rng.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s : s + m] = x
    return out


def write_clip_retrieval(
    root: Path, n: int, dim: int = 512, *, files: int = 4, seed: int = 0, dtype: str = "float16"
) -> np.ndarray:
    """Write ``n`` vectors in ``files`` parts in clip-retrieval's layout under ``root``; ids ``img<i>``
    (column ``image_path`` = ``images/img<i>.jpg``, ``caption``, ``url``). Returns the float32 vectors."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = clustered_vectors(n, dim, seed=seed)
    (root / "img_emb").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n, files + 1).astype(int)
    digits = len(str(files))
    for part, (a, b) in enumerate(itertools.pairwise(bounds)):
        tag = str(part).zfill(digits)
        np.save(root / "img_emb" / f"img_emb_{tag}.npy", vectors[a:b].astype(dtype))
        idx = np.arange(a, b).astype(str)
        table = pa.table(
            {
                "image_path": np.char.add(np.char.add("images/img", idx), ".jpg"),
                "caption": np.char.add("synthetic image ", idx),
                "url": np.char.add(np.char.add("https://example.com/img", idx), ".jpg"),
            }
        )
        pq.write_table(table, root / "metadata" / f"metadata_{tag}.parquet")
    return vectors


def write_npy_jsonl(root: Path, n: int, dim: int = 512, *, seed: int = 0) -> tuple[Path, Path, np.ndarray]:
    """``root/vectors.npy`` (float32) + ``root/ids.jsonl`` (``{"id": "img<i>", "caption": ...}``)."""
    root.mkdir(parents=True, exist_ok=True)
    vectors = clustered_vectors(n, dim, seed=seed)
    np.save(root / "vectors.npy", vectors)
    with open(root / "ids.jsonl", "w", encoding="utf-8") as f:
        f.writelines(
            json.dumps({"id": f"img{i}", "caption": f"synthetic image {i}"}) + "\n" for i in range(n)
        )
    return root / "vectors.npy", root / "ids.jsonl", vectors
