"""index_builder.shard_write / shard_plan / recall through write_version: shards carried over by checksum,
tombstones, compaction, recall by construction, prune of unreferenced shard files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import index_builder.shard_plan as shard_plan
from handler.core.index import load_index
from handler.core.storage import LocalStore
from index_builder.publish import prune, publish
from index_builder.recall import calibrate
from index_builder.version_write import write_version
from tests.conftest import normalized_vectors

FP = "sha256:" + "ab" * 32


def items_for(ids: list[int]) -> list[dict[str, Any]]:
    return [{"id": f"img-{i}", "uri": f"images/{i}.jpg"} for i in ids]


def write(store: LocalStore, version: str, vectors: np.ndarray, ids: list[int], **kw: Any) -> dict[str, Any]:
    manifest = write_version(
        store, version, vectors=vectors, items=items_for(ids), manifest_fields={"model_fingerprint": FP}, **kw
    )
    publish(store, version, manifest)
    return manifest


def shard_keys(manifest: dict[str, Any]) -> list[set[str]]:
    ext = {"hnsw": ".hnsw", "items": ".jsonl", "embeddings": ".npy"}
    return [{f"shards/{e['sha256']}{ext[p]}" for p, e in s["files"].items()} for s in manifest["shards"]]


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    real = LocalStore.upload_file
    monkeypatch.setattr(
        LocalStore, "upload_file", lambda self, key, path: (sent.append(key), real(self, key, path))[1]
    )
    return sent


def test_incremental_rebuild_touches_only_changed_shards(
    tmp_path: Path, uploads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shard_plan, "COMPACT_BELOW", 10)
    store = LocalStore(tmp_path)
    data = normalized_vectors(1000, 16, clusters=10, seed=1)
    v1 = write(store, "v1", data[:900], list(range(900)), shard_size=300)
    assert [s["count"] for s in v1["shards"]] == [300, 300, 300]
    before = {k: os.stat(tmp_path / k).st_ino for keys in shard_keys(v1) for k in keys}
    uploads.clear()
    ids = [i for i in range(900) if i != 5] + list(range(900, 920))  # 1 removed (shard 0), 20 new
    vectors = np.concatenate([data[[i for i in range(900) if i != 5]], data[900:920]])
    changed = vectors.copy()
    changed[400] = data[999]  # item 401 (shard 1) gets another vector
    v2 = write(store, "v2", changed, ids, shard_size=300)
    assert [s["deleted"] for s in v2["shards"]] == [[5], [101], [], []]
    assert shard_keys(v2)[:3] == shard_keys(v1)  # carried by checksum
    assert v2["shards"][3]["count"] == 21 and v2["sharding"]["built"] == 1  # 20 new + the changed one
    new_keys = shard_keys(v2)[3]
    assert sorted(k for k in uploads if k.startswith("shards/")) == sorted(new_keys)  # nothing else sent
    assert all(os.stat(tmp_path / k).st_ino == ino for k, ino in before.items())  # untouched files
    index = load_index(store)
    assert index.count == 919 and index.label_for("img-5") is None
    label = index.label_for("img-401")
    assert label is not None and label >= 900
    np.testing.assert_array_equal(index.embedding(label), data[999])
    assert index.search(data[999], k=1, ef=400)[0][0].item["id"] in ("img-401", "img-999")


def test_touched_shard_over_tombstone_limit_is_compacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shard_plan, "COMPACT_BELOW", 10)
    store = LocalStore(tmp_path)
    data = normalized_vectors(600, 16, seed=2)
    v1 = write(store, "v1", data, list(range(600)), shard_size=300)
    keep = list(range(100, 600))  # a third of shard 0 removed: over TOMBSTONE_MAX
    v2 = write(store, "v2", data[keep], keep, shard_size=300)
    assert [(s["count"], s["deleted"]) for s in v2["shards"]] == [(200, []), (300, [])]
    assert shard_keys(v2)[1] == shard_keys(v1)[1] and shard_keys(v2)[0] != shard_keys(v1)[0]


def test_small_index_rebuild_keeps_input_order(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = normalized_vectors(30, 8, seed=3)
    write(store, "v1", data[:20], list(range(20)))
    order = [0, 25, 1, 2, 3, 26, *range(4, 20)]
    write(store, "v2", data[order], order)
    index = load_index(store)
    assert [row["id"] for row in index.items] == [f"img-{i}" for i in order]  # one shard, compacted
    assert len(index.shards.shards) == 1


def test_recall_is_measured_and_recorded(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = normalized_vectors(3000, 32, clusters=30, seed=4)
    manifest = write(store, "v1", data, list(range(3000)), shard_size=1500, M=8, ef_construction=40)
    recall = manifest["recall"]
    assert recall["target"] == 0.99 and recall["fixed_ef"] is None and recall["measured"] >= 0.99
    assert manifest["ef"] == max(s["ef"] for s in manifest["shards"])
    for shard in manifest["shards"]:
        # 150 rows held out of each shard's graph (a tenth), each as an image query and a text-like one
        assert shard["recall"] >= 0.99 and shard["recall_queries"] == 300 and 10 <= shard["ef"] <= 1500
        assert shard["ef"] == max(shard["ef_by_query"].values())
        assert set(shard["ef_by_query"]) == set(shard["recall_by_query"]) == {"image", "text"}
        assert min(shard["recall_by_query"].values()) == shard["recall"]
    assert manifest["ef_by_query"] == {
        kind: max(s["ef_by_query"][kind] for s in manifest["shards"]) for kind in ("image", "text")
    }
    index = load_index(store)
    assert index.ef == manifest["ef"] and index.ef_by_query == manifest["ef_by_query"]
    for shard, entry in zip(index.shards.shards, manifest["shards"], strict=True):
        assert shard.ef == entry["ef"] and shard.ef_for(None) == entry["ef"]
        assert [shard.ef_for(k) for k in ("image", "text")] == [
            entry["ef_by_query"][k] for k in ("image", "text")
        ]
        # the held-out rows went into the graph after the calibration
        assert sorted(shard.index.get_ids_list()) == list(range(1500))
    for i in (0, 1499, 1500, 2999):  # ef >= count: exact
        assert index.search(data[i], k=1, ef=1500)[0][0].item["id"] == f"img-{i}"


def test_a_fixed_ef_is_every_query_kind_s_ef(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = normalized_vectors(1200, 16, clusters=10, seed=8)
    manifest = write(store, "v1", data, list(range(1200)), ef=33)
    assert manifest["ef"] == 33 and "ef_by_query" not in manifest
    assert manifest["shards"][0]["ef_by_query"] == {"image": 33, "text": 33}
    assert load_index(store).shards.shards[0].ef_for("text") == 33


def test_calibrate_finds_the_smallest_ef() -> None:
    import hnswlib

    data = normalized_vectors(4000, 32, clusters=40, seed=5)
    index = hnswlib.Index(space="ip", dim=32)
    index.init_index(max_elements=4000, M=4, ef_construction=20, random_seed=1)
    index.add_items(data, np.arange(4000), num_threads=1)
    cal = calibrate(index, data, 0.95, queries=300)
    assert cal.reached and cal.recall >= 0.95 and cal.queries == 300
    assert cal.ef >= 20, cal  # M=4 / ef_construction=20: a weak graph needs a wide search
    assert calibrate(index, data, 0.95, fixed_ef=cal.ef // 2, queries=300).recall < 0.95
    assert calibrate(index, data[:0], 0.99).recall == 1.0


def test_prune_keeps_referenced_shard_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = normalized_vectors(60, 8, seed=6)
    v1 = write(store, "v1", data[:20], list(range(20)))
    v2 = write(store, "v2", data[20:40], list(range(20, 40)))
    v3 = write(store, "v3", data[40:60], list(range(40, 60)))
    assert prune(store, keep=2, shard_grace_s=0) == ["v1"]
    present = {f"shards/{p.name}" for p in (tmp_path / "shards").iterdir()}
    assert present == shard_keys(v2)[0] | shard_keys(v3)[0]
    assert not present & shard_keys(v1)[0]
    assert load_index(store).count == 20
    orphan = tmp_path / "shards" / ("0" * 64 + ".hnsw")  # a concurrent build's upload: young, kept
    orphan.write_bytes(b"x")
    prune(store, keep=2)
    assert orphan.is_file()


@pytest.fixture
def inserted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows each hnswlib add_items call inserts."""
    import hnswlib

    sizes: list[int] = []

    class Spy(hnswlib.Index):  # type: ignore[misc]
        def add_items(self, data: Any, *args: Any, **kw: Any) -> Any:
            sizes.append(len(data))
            return super().add_items(data, *args, **kw)

    monkeypatch.setattr(hnswlib, "Index", Spy)
    return sizes


def test_new_items_extend_a_carried_tail_instead_of_rebuilding_it(
    tmp_path: Path, inserted: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shard_plan, "COMPACT_BELOW", 100)
    store = LocalStore(tmp_path)
    data = normalized_vectors(340, 16, clusters=10, seed=5)
    v1 = write(store, "v1", data[:300], list(range(300)), shard_size=2000)
    inserted.clear()
    keep = [i for i in range(300) if i != 7]  # a tombstone in the tail, and 40 new items
    v2 = write(store, "v2", data[keep + list(range(300, 340))], keep + list(range(300, 340)), shard_size=2000)
    assert inserted == [40]  # only the new rows inserted into the loaded graph
    assert [(s["count"], s["deleted"]) for s in v2["shards"]] == [(340, [7])]
    assert shard_keys(v2) != shard_keys(v1) and v2["sharding"]["built"] == 1
    index = load_index(store)
    assert index.count == 339 and index.label_for("img-7") is None
    assert [index.label_for(f"img-{i}") for i in (0, 299, 300, 339)] == [0, 299, 300, 339]
    for i in (3, 305, 339):  # ef >= count: exact
        assert index.search(data[i], k=1, ef=400)[0][0].item["id"] == f"img-{i}"


def test_an_extended_tail_is_calibrated_on_held_out_new_rows(
    tmp_path: Path, inserted: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shard_plan, "COMPACT_BELOW", 100)
    store = LocalStore(tmp_path)
    data = normalized_vectors(1500, 16, clusters=10, seed=6)
    write(store, "v1", data[:300], list(range(300)), shard_size=5000)
    inserted.clear()
    v2 = write(store, "v2", data, list(range(1500)), shard_size=5000)
    assert inserted == [1080, 120]  # a tenth of the new rows held out, inserted after the calibration
    assert v2["shards"][0]["recall_queries"] == 240 and v2["shards"][0]["count"] == 1500
    shard = load_index(store).shards.shards[0]
    assert sorted(shard.index.get_ids_list()) == list(range(1500))


def test_a_tiny_tail_is_rebuilt_in_input_order(tmp_path: Path, inserted: list[int]) -> None:
    store = LocalStore(tmp_path)
    data = normalized_vectors(60, 8, seed=6)
    write(store, "v1", data[:50], list(range(50)))
    inserted.clear()
    write(store, "v2", data, list(range(60)))
    assert inserted == [60]  # below COMPACT_BELOW: rebuilt whole (cheap)


class _RemoteLike(LocalStore):
    """A local store that, like S3, has no local paths: files are downloaded (and counted)."""

    downloads: list[str]

    def local_path(self, key: str) -> None:  # type: ignore[override]
        return None

    def download_file(self, key: str, local_path: str | Path) -> None:
        self.downloads.append(key)
        super().download_file(key, local_path)


def test_previous_shards_fetched_by_the_build_are_not_downloaded_again(tmp_path: Path) -> None:
    store = _RemoteLike(tmp_path / "dest")
    store.downloads = []
    data = normalized_vectors(200, 8, seed=8)
    v1 = write(store, "v1", data[:100], list(range(100)), shard_size=50)
    fetched = tmp_path / "fetched"
    for shard in v1["shards"]:
        key = f"shards/{shard['files']['embeddings']['sha256']}.npy"
        (fetched / "shards").mkdir(parents=True, exist_ok=True)
        (fetched / key).write_bytes((tmp_path / "dest" / key).read_bytes())
    store.downloads.clear()
    v2 = write(store, "v2", data[:100], list(range(100)), shard_size=50, previous_dir=fetched)
    assert shard_keys(v2) == shard_keys(v1) and store.downloads == []
    write(store, "v3", data[:100], list(range(100)), shard_size=50)
    assert sorted(store.downloads) == sorted(k for keys in shard_keys(v1) for k in keys if k.endswith(".npy"))
