"""index_builder.publish: writing versions, moving the pointer safely, pruning."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handler.core.errors import ArtifactError
from handler.core.index import load_index
from handler.core.index_format import read_pointer, valid_version_id
from handler.core.storage import Store, file_digest, open_store
from index_builder.publish import list_versions, prune, publish
from index_builder.version_write import new_version_id, write_version
from tests.conftest import normalized_vectors

FP = "sha256:" + "ab" * 32
FIELDS = {
    "model_fingerprint": FP,
    "precision": "int8",
    "source": "s3://images/",
    "stats": {"embedded": 3, "unchanged": 0, "removed": 0},
}


def write(store: Store, version: str, n: int = 12, dim: int = 8, **kw: Any) -> dict[str, Any]:
    vectors = normalized_vectors(n, dim, seed=n)
    items = [{"id": f"id-{i}", "caption": f"caption {i} ü"} for i in range(n)]
    return write_version(store, version, vectors=vectors, items=items, manifest_fields=FIELDS, **kw)


def test_new_version_id() -> None:
    ids = []
    for _ in range(5):
        ids.append(new_version_id())
        time.sleep(0.001)
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert all(valid_version_id(v) for v in ids)
    assert ids[0][:2] == "20" and ids[0][8] == "T"


def test_write_version_layout_and_manifest(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    errors = [{"key": "broken.jpg", "reason": "invalid_image"}]
    manifest = write(store, "v1", M=8, ef_construction=50, ef=20, errors=errors, threads=1)
    vdir = tmp_path / "versions/v1"
    assert sorted(p.name for p in vdir.iterdir()) == ["errors.jsonl", "manifest.json"]
    [shard] = manifest["shards"]
    ext = {"hnsw": "hnsw", "items": "jsonl", "embeddings": "npy"}
    names = {part: f"{e['sha256']}.{ext[part]}" for part, e in shard["files"].items()}
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == sorted(names.values())
    for part, entry in shard["files"].items():
        assert file_digest(tmp_path / "shards" / names[part]) == (entry["sha256"], entry["size"])
    assert (shard["count"], shard["deleted"], shard["ef"]) == (12, [], 20)
    assert 0.0 <= shard["recall"] <= 1.0 and manifest["recall"]["fixed_ef"] == 20
    stored = json.loads((vdir / "manifest.json").read_bytes())
    assert stored == manifest
    assert {
        k: manifest[k]
        for k in (
            "schema_version",
            "kind",
            "version",
            "dim",
            "count",
            "space",
            "M",
            "ef_construction",
            "ef",
            "model_fingerprint",
            "precision",
            "source",
        )
    } == {
        "schema_version": 2,
        "kind": "clip-hnsw-index",
        "version": "v1",
        "dim": 8,
        "count": 12,
        "space": "ip",
        "M": 8,
        "ef_construction": 50,
        "ef": 20,
        "model_fingerprint": FP,
        "precision": "int8",
        "source": "s3://images/",
    }
    assert manifest["stats"] == {"embedded": 3, "unchanged": 0, "removed": 0, "errors": 1}
    assert manifest["built_at"].endswith("Z") and manifest["builder"].startswith("index_builder")
    for name, entry in manifest["files"].items():
        assert file_digest(vdir / name) == (entry["sha256"], entry["size"])
    assert [json.loads(line) for line in (vdir / "errors.jsonl").read_text().splitlines()] == errors
    items_path = tmp_path / "shards" / names["items"]
    items = [json.loads(line) for line in items_path.read_text(encoding="utf-8").splitlines()]
    assert items[3] == {"id": "id-3", "caption": "caption 3 ü"}
    emb = np.load(tmp_path / "shards" / names["embeddings"])
    assert emb.dtype == np.float32 and emb.shape == (12, 8)
    np.testing.assert_array_equal(emb, normalized_vectors(12, 8, seed=12))
    assert read_pointer(store) is None  # writing does not publish


def test_write_version_rejects_bad_input(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    vectors = normalized_vectors(3, 4)
    items = [{"id": i} for i in range(3)]
    ok = {"vectors": vectors, "items": items, "manifest_fields": {"model_fingerprint": FP}}
    bad_cases = [
        ({"vectors": vectors * 2}, "L2-normalised"),
        ({"vectors": vectors[:2]}, "2 vectors but 3 items"),
        ({"vectors": vectors[0]}, "shape"),
        ({"vectors": np.full((3, 4), np.nan, np.float32)}, "NaN"),
        ({"items": [{"id": 1}, {"id": 1}, {"id": 2}]}, "duplicate item id"),
        ({"items": [{"id": 1}, {"x": 1}, {"id": 2}]}, "must be a dict with an 'id'"),
        ({"items": [{"id": 1}, {"id": 2}, {"id": 3, "bad": object()}]}, "JSON"),
        ({"manifest_fields": {}}, "model_fingerprint"),
        ({"manifest_fields": {"model_fingerprint": FP, "count": 9}}, "computed"),
        ({"M": 1}, "M must be"),
    ]
    for change, message in bad_cases:
        with pytest.raises(ValueError, match=message):
            write_version(store, "v1", **{**ok, **change})
    with pytest.raises(ValueError):
        write_version(store, "../evil", **ok)
    write_version(store, "v1", **ok)
    with pytest.raises(ValueError, match="already exists"):
        write_version(store, "v1", **ok)


def test_publish_refuses_incomplete_versions(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    manifest = write(store, "v1")
    publish(store, "v1", manifest)
    good_pointer = store.read_bytes("CURRENT")
    assert json.loads(good_pointer) == {
        "version": "v1",
        "manifest_sha256": hashlib.sha256(store.read_bytes("versions/v1/manifest.json")).hexdigest(),
    }

    manifest2 = write(store, "v2", n=13)  # other content: its own shard files
    npy = f"shards/{manifest2['shards'][0]['files']['embeddings']['sha256']}.npy"
    (tmp_path / npy).unlink()
    with pytest.raises(ArtifactError, match=rf"{npy} is missing"):
        publish(store, "v2", manifest2)
    (tmp_path / npy).write_bytes(b"short")
    with pytest.raises(ArtifactError, match=rf"{npy} has size 5"):
        publish(store, "v2")
    (tmp_path / "versions/v2/manifest.json").unlink()  # a build that died before its manifest
    with pytest.raises(ArtifactError, match="incomplete"):
        publish(store, "v2")
    manifest3 = write(store, "v3")
    with pytest.raises(ArtifactError, match="differs"):
        publish(store, "v3", {**manifest3, "count": 99})
    assert store.read_bytes("CURRENT") == good_pointer  # never moved
    assert load_index(store).version == "v1"
    publish(store, "v3", manifest3)
    assert load_index(store).version == "v3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "shards", "versions"]  # no temp files


def test_prune(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for v in ("v1", "v2", "v3", "v4", "v5", "v6"):
        write(store, v, n=3)
    (tmp_path / "versions/v2/manifest.json").unlink()  # crashed old build
    (tmp_path / "versions/v6/manifest.json").unlink()  # in-progress build, newer than current
    assert prune(store, keep=2) == []  # no pointer yet: nothing happens
    publish(store, "v5")
    assert prune(store, keep=2) == ["v1", "v2", "v3"]
    assert list_versions(store) == {"v4": True, "v5": True, "v6": False}
    assert load_index(store).version == "v5"
    publish(store, "v4")  # rollback: v5 is now newer than current and is left alone
    assert prune(store, keep=1) == []
    assert sorted(list_versions(store)) == ["v4", "v5", "v6"]
    publish(store, "v5")
    assert prune(store, keep=1) == ["v4"]
    assert prune(store, keep=5) == []
    assert sorted(list_versions(store)) == ["v5", "v6"]
    with pytest.raises(ValueError):
        prune(store, keep=0)


def test_empty_collection(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    manifest = write_version(
        store, "v0", vectors=np.zeros((0, 8), np.float32), items=[], manifest_fields={"model_fingerprint": FP}
    )
    assert manifest["count"] == 0 and manifest["shards"] == []
    publish(store, "v0", manifest)
    index = load_index(store)
    assert index.count == 0 and index.search(np.ones(8, np.float32), k=3) == [[]]


@pytest.mark.s3
def test_write_publish_prune_on_s3(s3_server) -> None:
    uri = f"s3://{s3_server.make_bucket()}/idx"
    store = open_store(uri)
    for v in ("v1", "v2", "v3"):
        publish(store, v, write(store, v, n=20))
    assert read_pointer(uri)["version"] == "v3"
    index = load_index(uri, expected_fingerprint=FP)
    assert index.count == 20 and index.get_item("id-4")["caption"] == "caption 4 ü"
    manifest = write(store, "v4", n=21)
    hnsw = f"shards/{manifest['shards'][0]['files']['hnsw']['sha256']}.hnsw"
    store.delete(hnsw)
    with pytest.raises(ArtifactError, match=rf"{hnsw} is missing"):
        publish(uri, "v4", manifest)
    assert prune(uri, keep=2) == ["v1"]
    assert sorted(list_versions(uri)) == ["v2", "v3", "v4"]
    assert load_index(uri).version == "v3"
