"""handler.core.hnsw_vectors: stored vectors read in place from an hnswlib file, by label, and the shards
that use them (an index loaded from S3 has no embeddings.npy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handler.core.hnsw_vectors import HEADER, HnswVectors
from handler.core.search import SearchIndex
from handler.core.shards import FILTER_EXACT_BELOW, Shard
from tests.conftest import normalized_vectors


def _saved(tmp_path: Path, data: np.ndarray, order: np.ndarray) -> tuple[Any, Path]:
    """An hnswlib index of ``data`` (label = row) inserted in ``order`` (internal ids != labels), saved."""
    import hnswlib

    index = hnswlib.Index(space="ip", dim=data.shape[1])
    index.init_index(max_elements=len(data), M=8, ef_construction=40, random_seed=1)
    for part in np.array_split(order, 3):
        index.add_items(data[part], part, num_threads=2)
    path = tmp_path / "shard.hnsw"
    index.save_index(str(path))
    return index, path


def test_rows_are_the_stored_vectors_by_label(tmp_path: Path) -> None:
    data = normalized_vectors(500, 24, seed=1)
    order = np.random.default_rng(0).permutation(500)
    index, path = _saved(tmp_path, data, order)
    assert HEADER.size == 96
    file = HnswVectors(path, 500, 24)
    labels = np.array([0, 499, 7, 7, 250])
    np.testing.assert_array_equal(file.rows(labels), data[labels])
    np.testing.assert_array_equal(file.rows(labels), np.asarray(index.get_items(labels, return_type="numpy")))
    assert file.rows(np.arange(500)).dtype == np.float32 and file.rows(np.arange(0)).shape == (0, 24)


@pytest.mark.parametrize(
    ("count", "dim", "damage", "error"),
    [
        (400, 24, None, ValueError),  # another count than the header's
        (500, 32, None, ValueError),  # another dim
        (500, 24, "truncate", ValueError),  # the level-0 block cut short
        (500, 24, "missing", OSError),
    ],
)
def test_a_file_that_is_not_what_it_claims_is_refused(
    tmp_path: Path, count: int, dim: int, damage: str | None, error: type[Exception]
) -> None:
    _, path = _saved(tmp_path, normalized_vectors(500, 24, seed=2), np.arange(500))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: HEADER.size + 1000])
    elif damage == "missing":
        path.unlink()
    with pytest.raises(error):
        HnswVectors(path, count, dim).rows(np.array([1]))


def test_a_shard_reads_its_file_and_falls_back_to_hnswlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = normalized_vectors(300, 16, clusters=6, seed=3)
    index, path = _saved(tmp_path, data, np.random.default_rng(1).permutation(300))
    shard = Shard(index, 0, 300, (), 32, None, None, path)
    manifest = {"version": "v", "dim": 16, "count": 300, "model_fingerprint": "sha256:x", "ef": 32}
    search = SearchIndex(manifest, None, [{"id": i} for i in range(300)], shards=[shard])
    calls: list[int] = []
    real = type(index).get_items
    monkeypatch.setattr(
        type(index), "get_items", lambda s, ids, **kw: (calls.append(len(ids)), real(s, ids, **kw))[1]
    )
    assert shard.has_local_vectors()  # so the filtered search switches at FILTER_EXACT_BELOW
    mask = np.zeros(300, dtype=bool)
    mask[: int(300 * FILTER_EXACT_BELOW / 2)] = True
    hits = search.search(data[5], k=5, allowed=mask)[0]
    exact = np.flatnonzero(mask)[np.argsort(-(data[mask] @ data[5]))[:5]]
    assert [h.label for h in hits] == exact.tolist() and not calls  # exact scan, vectors from the file
    np.testing.assert_array_equal(search.embedding(42), data[42])
    path.unlink()  # an evicted cache file (a newer version loaded): hnswlib's copy still serves
    np.testing.assert_array_equal(
        Shard(index, 0, 300, (), 32, None, None, path).vectors(np.array([3])), data[[3]]
    )
    assert calls == [1]
