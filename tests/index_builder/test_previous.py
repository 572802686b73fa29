"""index_builder.previous: the previous version's rows and vectors, read shard by shard."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from handler.core.index_format import read_manifest, read_pointer
from handler.core.storage import LocalStore
from index_builder.options import _Log
from index_builder.previous import ShardRows, _load_previous_vectors, _Previous
from index_builder.publish import publish
from index_builder.version_write import write_version
from tests.conftest import normalized_vectors

FP = "sha256:" + "cd" * 32


def test_previous_vectors_are_read_per_shard_not_concatenated(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = normalized_vectors(90, 8, seed=7)
    items = [{"id": f"img-{i}", "sha256": f"{i:064x}"} for i in range(90)]
    fields = {"model_fingerprint": FP}
    publish(
        store,
        "v1",
        write_version(store, "v1", vectors=data, items=items, manifest_fields=fields, shard_size=30),
    )
    pointer = read_pointer(store)
    assert pointer is not None
    prev = _Previous("v1", read_manifest(store, "v1", pointer["manifest_sha256"]))
    assert _load_previous_vectors(store, prev, tmp_path / "work", _Log(True))
    rows = prev.embeddings
    assert isinstance(rows, ShardRows) and len(rows) == 90
    assert len(rows.parts) == 3 and all(isinstance(p, np.memmap) for p in rows.parts)  # no 2 GB copy at 1M
    labels = [prev.rows[f"img-{i}"] for i in range(90)]
    np.testing.assert_array_equal(rows[np.asarray(labels)], data)
    np.testing.assert_array_equal(rows[labels[45]], data[45])
    cached = prev.cached(f"{61:064x}")
    assert cached is not None
    np.testing.assert_array_equal(cached.vector, data[61])
