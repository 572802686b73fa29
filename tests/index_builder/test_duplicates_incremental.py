"""index_builder.duplicates_incremental: a publish over a version with duplicate groups updates them (only
the changed rows searched) and writes the same duplicates.jsonl as a build of the same collection from
scratch; other settings, a missing or corrupt previous file, or no reuse compute them in full."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import index_builder.duplicates_incremental as incremental
from handler.core.storage import open_store
from index_builder.publish import publish
from index_builder.version_write import write_version
from tests.conftest import normalized_vectors
from tests.handler.core.test_duplicates import planted

FP = "sha256:" + "cd" * 32
SETTING = {"threshold": 0.95, "k": 16}


def fields(setting: dict[str, Any] | None = SETTING) -> dict[str, Any]:
    return {"model_fingerprint": FP, "source": None, "duplicates": setting}


def write(
    dest: Path | str, version: str, vectors: np.ndarray, items: list[dict[str, Any]], **kw: Any
) -> None:
    m = write_version(dest, version, vectors=vectors, items=items, manifest_fields=fields(), threads=1, **kw)
    publish(dest, version, m)


def versions() -> tuple[np.ndarray, list[dict[str, Any]], np.ndarray, list[dict[str, Any]], int]:
    old = planted(200, 32, [3, 4, 2, 5], noise=0.15, seed=6)
    items = [{"id": f"p{i}"} for i in range(len(old))]
    keep = [i for i in range(len(old)) if i not in (3, 201)]  # a copy's original and a copy deleted
    new = old[keep].copy()
    new_items = [items[i] for i in keep]
    new[10] = old[1]  # changed: now a copy of row 1
    add = np.concatenate([old[[0, 0]], normalized_vectors(4, 32, seed=41)])  # two more copies of row 0
    new_items += [{"id": f"n{i}"} for i in range(len(add))]
    return old, items, np.concatenate([new, add]).astype(np.float32), new_items, 1 + len(add)


@pytest.mark.parametrize("shards", [1, 3])
def test_incremental_publish_writes_the_groups_of_a_full_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shards: int
) -> None:
    old, items, new, new_items, changed = versions()
    size = -(-len(old) // shards)
    write(tmp_path / "full", "v2", new, new_items, shard_size=size)
    expected = (tmp_path / "full/versions/v2/duplicates.jsonl").read_text()
    write(tmp_path / "incr", "v1", old, items, shard_size=size)
    searched: list[int] = []  # HNSW queries: the changed rows, in each shard of the current version
    real = incremental.linked_neighbours

    def spy(index: Any, queries: np.ndarray, *args: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        searched.append(len(queries))
        return real(index, queries, *args)

    def full(*args: object, **kwargs: object) -> None:
        raise AssertionError("computed in full")

    monkeypatch.setattr(incremental, "linked_neighbours", spy)
    monkeypatch.setattr(incremental, "find_duplicate_groups", full)
    write(tmp_path / "incr", "v2", new, new_items, shard_size=size)
    assert (tmp_path / "incr/versions/v2/duplicates.jsonl").read_text() == expected
    assert searched == [changed] * shards and expected.count("\n") == 4
    assert expected.startswith('{"items":["p1","p11",')  # the changed row joined row 1's group


@pytest.mark.parametrize("why", ["threshold", "corrupt", "no reuse"])
def test_the_groups_are_found_in_full_without_a_usable_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    old, items, new, new_items, _ = versions()
    write(tmp_path / "full", "v2", new, new_items)
    expected = (tmp_path / "full/versions/v2/duplicates.jsonl").read_text()
    dest = tmp_path / "index"
    setting = {"threshold": 0.9, "k": 16} if why == "threshold" else SETTING
    m = write_version(dest, "v1", vectors=old, items=items, manifest_fields=fields(setting), threads=1)
    publish(dest, "v1", m)
    if why == "corrupt":
        (dest / "versions/v1/duplicates.jsonl").write_text('{"items": ["p0", "p1"], "scores": [1, 1]}\n')
    calls: list[int] = []
    real = incremental.find_duplicate_groups
    monkeypatch.setattr(
        incremental, "find_duplicate_groups", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    write(dest, "v2", new, new_items, reuse=why != "no reuse")
    assert calls == [1]
    assert (dest / "versions/v2/duplicates.jsonl").read_text() == expected


def test_incremental_publish_on_s3(s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The current version's shards are downloaded to search them (checked against their sha256)."""
    old, items, new, new_items, _ = versions()
    write(tmp_path / "full", "v2", new, new_items)
    expected = (tmp_path / "full/versions/v2/duplicates.jsonl").read_text()
    dest = f"s3://{s3_server.make_bucket()}/idx"
    write(dest, "v1", old, items, shard_size=120)
    monkeypatch.setattr(incremental, "find_duplicate_groups", None)  # not called
    write(dest, "v2", new, new_items, shard_size=120)
    assert open_store(dest).read_bytes("versions/v2/duplicates.jsonl").decode() == expected
