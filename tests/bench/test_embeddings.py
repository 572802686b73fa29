"""bench.embeddings writes collections that import-embeddings reads back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.embeddings import write_clip_retrieval, write_npy_jsonl
from index_builder.embeddings_files import read_collection


def test_clip_retrieval_collection_reads_back(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    vectors = write_clip_retrieval(tmp_path / "emb", 1000, 32, files=3, seed=1)
    assert sorted(p.name for p in (tmp_path / "emb" / "img_emb").iterdir()) == [
        "img_emb_0.npy",
        "img_emb_1.npy",
        "img_emb_2.npy",
    ]
    c = read_collection(str(tmp_path / "emb"))
    assert c.layout == "clip-retrieval" and c.dtype == "float16" and c.files == 3
    np.testing.assert_allclose(c.vectors, vectors, atol=2e-3)
    assert c.rows[999] == {
        "id": "images/img999.jpg",
        "uri": "https://example.com/img999.jpg",
        "metadata": {"image_path": "images/img999.jpg", "caption": "synthetic image 999"},
    }


def test_npy_jsonl_collection_reads_back(tmp_path: Path) -> None:
    npy, ids, vectors = write_npy_jsonl(tmp_path, 500, 16)
    c = read_collection(str(npy), str(ids))
    np.testing.assert_allclose(c.vectors, vectors, atol=1e-6)
    assert [r["id"] for r in c.rows] == [f"img{i}" for i in range(500)]
