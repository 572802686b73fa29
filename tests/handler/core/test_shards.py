"""handler.core.shards (through SearchIndex): K shards searched and merged, tombstones, filtered search,
reading schema-1 (single-file) versions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handler.core.errors import ArtifactError
from handler.core.index import load_index
from handler.core.search import SearchIndex
from handler.core.storage import Store, file_digest, open_store
from index_builder.publish import publish
from index_builder.version_write import write_version
from tests.conftest import normalized_vectors

FP = "sha256:" + "ab" * 32


def items_for(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": f"img-{i}"} for i in range(start, start + n)]


def build(
    store: Store, version: str, vectors: np.ndarray, items: list[dict[str, Any]], **kw: Any
) -> dict[str, Any]:
    manifest = write_version(
        store, version, vectors=vectors, items=items, manifest_fields={"model_fingerprint": FP}, **kw
    )
    publish(store, version, manifest)
    return manifest


def exact_ids(index: SearchIndex, vectors: np.ndarray, ids: list[str], q: np.ndarray, k: int) -> list[str]:
    scores = q @ vectors.T
    order = np.lexsort((np.arange(len(ids)), -scores))[:k]
    return [ids[i] for i in order]


def write_v1_version(
    root: Path, version: str, vectors: np.ndarray, items: list[dict[str, Any]], ef: int
) -> None:
    """A schema-1 version as the builder wrote it before shards existed (one index.hnsw per version)."""
    import hnswlib

    vdir = root / "versions" / version
    vdir.mkdir(parents=True)
    index = hnswlib.Index(space="ip", dim=vectors.shape[1])
    index.init_index(max_elements=len(vectors), M=16, ef_construction=200, random_seed=100)
    index.add_items(vectors, np.arange(len(vectors)), num_threads=1)
    index.save_index(str(vdir / "index.hnsw"))
    (vdir / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    np.save(vdir / "embeddings.npy", vectors.astype(np.float32))
    (vdir / "errors.jsonl").write_text("")
    files = {}
    for name in ("index.hnsw", "items.jsonl", "embeddings.npy", "errors.jsonl"):
        digest, size = file_digest(vdir / name)
        files[name] = {"sha256": digest, "size": size}
    manifest = {
        "schema_version": 1,
        "kind": "clip-hnsw-index",
        "version": version,
        "model_fingerprint": FP,
        "precision": "fp32",
        "dim": vectors.shape[1],
        "count": len(vectors),
        "space": "ip",
        "M": 16,
        "ef_construction": 200,
        "ef": ef,
        "files": files,
    }
    raw = json.dumps(manifest).encode()
    (vdir / "manifest.json").write_bytes(raw)
    pointer = {"version": version, "manifest_sha256": hashlib.sha256(raw).hexdigest()}
    (root / "CURRENT").write_text(json.dumps(pointer))


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return normalized_vectors(400, 16, clusters=8, seed=3)


def test_sharded_search_equals_exact(tmp_path: Path, data: np.ndarray) -> None:
    store = open_store(tmp_path)
    manifest = build(store, "v1", data, items_for(400), shard_size=100)
    assert [s["count"] for s in manifest["shards"]] == [100, 100, 100, 100]
    index = load_index(store.uri)
    assert len(index.shards.shards) == 4 and index.count == 400
    ids = [f"img-{i}" for i in range(400)]
    queries = normalized_vectors(20, 16, clusters=8, seed=4)
    for q in queries:
        [hits] = index.search(q, k=15, ef=400)  # ef >= every shard's count: exhaustive
        assert [h.item["id"] for h in hits] == exact_ids(index, data, ids, q, 15)
        assert [h.score for h in hits] == pytest.approx(
            sorted((float(s) for s in q @ data.T), reverse=True)[:15], abs=1e-5
        )
    [page] = index.search(queries[0], k=5, offset=5, ef=400)
    assert [h.item["id"] for h in page] == exact_ids(index, data, ids, queries[0], 10)[5:]
    assert index.label_for("img-250") == 250 and index.items[250]["id"] == "img-250"  # labels = rows
    np.testing.assert_array_equal(index.embedding(250), data[250])


def test_tombstones_never_come_back(
    tmp_path: Path, data: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import index_builder.shard_plan as plan

    monkeypatch.setattr(plan, "COMPACT_BELOW", 10)  # small shards get tombstones too
    store = open_store(tmp_path)
    build(store, "v1", data, items_for(400), shard_size=200)
    keep = [i for i in range(400) if i % 50 != 7]  # 8 removed: 2% per shard, below TOMBSTONE_MAX
    manifest = build(store, "v2", data[keep], [items_for(400)[i] for i in keep], shard_size=200)
    assert [len(s["deleted"]) for s in manifest["shards"]] == [4, 4]
    index = load_index(store.uri)
    assert index.count == 392 and len(index.items) == 400
    assert index.label_for("img-7") is None and index.get_item("img-7") is None and not index.is_live(7)
    [hits] = index.search(data[7], k=392, ef=400)
    assert len(hits) == 392 and "img-7" not in {h.item["id"] for h in hits}
    mask = np.zeros(400, dtype=bool)
    mask[[7, 8]] = True  # one tombstone, one live item
    assert [h.item["id"] for h in index.search(data[7], k=5, allowed=mask)[0]] == ["img-8"]


@pytest.mark.parametrize("fraction", [0.01, 0.3])  # exact path and HNSW filter path
def test_filtered_search_equals_exact_on_the_subset(
    tmp_path: Path, data: np.ndarray, fraction: float
) -> None:
    store = open_store(tmp_path)
    build(store, "v1", data, items_for(400), shard_size=150)
    index = load_index(store.uri)
    rng = np.random.default_rng(5)
    allowed = np.flatnonzero(rng.random(400) < fraction)
    ids = [f"img-{i}" for i in allowed]
    for q in normalized_vectors(10, 16, clusters=8, seed=6):
        k = min(10, len(allowed))
        by_labels = index.search(q, k=k, ef=400, allowed=allowed)[0]
        mask = np.zeros(400, dtype=bool)
        mask[allowed] = True
        by_mask = index.search(q, k=k, ef=400, allowed=mask)[0]
        assert [h.item["id"] for h in by_labels] == [h.item["id"] for h in by_mask]
        assert [h.item["id"] for h in by_labels] == exact_ids(index, data[allowed], ids, q, k)
    [all_hits] = index.search(data[0], k=len(allowed) + 5, allowed=allowed)  # default ef
    assert len(all_hits) == len(allowed)  # every allowed item comes back when k exceeds them


def test_filtered_search_returns_k_when_k_allowed_exist(tmp_path: Path, data: np.ndarray) -> None:
    store = open_store(tmp_path)
    build(store, "v1", data, items_for(400), shard_size=400, ef=10)
    index = load_index(store.uri)
    index.filter_exact_below = 0.0  # force the HNSW filter path with a small ef
    far = np.argsort(data @ data[0])[:150]  # the items least like the query
    [hits] = index.search(data[0], k=50, allowed=far)
    assert len(hits) == 50 and {h.label for h in hits} <= set(far.tolist())
    with pytest.raises(ValueError, match="allowed"):
        index.search(data[0], k=5, allowed=np.array([400]))


def test_reads_schema_1_versions(tmp_path: Path, data: np.ndarray) -> None:
    write_v1_version(tmp_path, "old", data[:50], items_for(50), ef=33)
    index = load_index(str(tmp_path), expected_fingerprint=FP)
    assert (index.version, index.count, index.ef, len(index.shards.shards)) == ("old", 50, 33, 1)
    [hits] = index.search(data[9], k=3)
    assert hits[0].item["id"] == "img-9" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(index.embedding(9), data[9])
    (tmp_path / "versions/old/index.hnsw").write_bytes(
        b"x" * (tmp_path / "versions/old/index.hnsw").stat().st_size
    )
    with pytest.raises(ArtifactError, match=r"index\.hnsw: sha256"):
        load_index(str(tmp_path))
    # the next build migrates it: a schema-2 version that no longer needs the old files
    build(open_store(tmp_path), "new", data[:50], items_for(50))
    assert load_index(str(tmp_path)).manifest["schema_version"] == 2


def test_corrupt_shard_is_refused_by_name(tmp_path: Path, data: np.ndarray) -> None:
    store = open_store(tmp_path)
    manifest = build(store, "v1", data, items_for(400), shard_size=200)
    key = f"shards/{manifest['shards'][1]['files']['hnsw']['sha256']}.hnsw"
    path = tmp_path / key
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match=rf"{key}: sha256"):
        load_index(store.uri)
    path.write_bytes(bytes(raw[:-1]))
    with pytest.raises(ArtifactError, match=rf"{key}: size"):
        load_index(store.uri, verify=False)


def _set_by_query(store: Store, version: str, per_shard: list[dict[str, int] | None]) -> None:
    """Rewrite a published manifest's shards' ``ef_by_query`` (None: drop it, as older builders wrote)."""
    from tests.handler.core.test_index import rewrite_manifest

    manifest = json.loads(store.read_bytes(f"versions/{version}/manifest.json"))
    for shard, per in zip(manifest["shards"], per_shard, strict=True):
        shard.pop("recall_by_query", None)
        if per is None:
            shard.pop("ef_by_query", None)
        else:
            shard["ef_by_query"] = per
            shard["ef"] = max(per.values())
    rewrite_manifest(store, version, {"shards": manifest["shards"], "ef_by_query": None})


def test_each_query_kind_searches_at_its_shard_s_ef(
    tmp_path: Path, data: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handler.core.shards import Shard

    store = open_store(tmp_path)
    build(store, "v1", data, items_for(400), shard_size=200)
    _set_by_query(store, "v1", [{"image": 21, "text": 77}, None])  # shard 1: an older shard, one ef
    index = load_index(store.uri)
    first, second = index.shards.shards
    assert (first.ef_for("image"), first.ef_for("text"), first.ef_for(None)) == (21, 77, 77)
    assert second.ef_for("image") == second.ef_for("text") == second.ef
    seen: list[tuple[int, int]] = []
    real = Shard.knn
    monkeypatch.setattr(
        Shard,
        "knn",
        lambda s, q, want, ef, allowed=None: (seen.append((s.offset, ef)), real(s, q, want, ef, allowed))[1],
    )
    for kind, efs in (("image", (21, second.ef)), ("text", (77, second.ef)), (None, (77, second.ef))):
        seen.clear()
        index.search(data[3], k=5, kind=kind)
        assert sorted(seen) == [(0, efs[0]), (200, max(efs[1], 5))], kind
    seen.clear()
    index.search(data[3], k=5, ef=50, kind="image")  # a request's ef wins
    assert sorted(seen) == [(0, 50), (200, 50)]
    seen.clear()
    mask = np.zeros(400, dtype=bool)
    mask[:300] = True  # a filter passing most items: the graph walk, from the kind's ef
    index.search(data[3], k=5, allowed=mask, kind="image")
    assert sorted(seen)[0] == (0, 21)  # shard 0: all of it allowed, ef not widened


@pytest.mark.parametrize(
    "per",
    [{"video": 5}, {"image": 0}, {"text": "12"}, {"image": True}, ["image"]],
)
def test_a_bad_ef_by_query_is_refused(tmp_path: Path, data: np.ndarray, per: Any) -> None:
    store = open_store(tmp_path)
    build(store, "v1", data[:50], items_for(50))
    from tests.handler.core.test_index import rewrite_manifest

    manifest = json.loads(store.read_bytes("versions/v1/manifest.json"))
    manifest["shards"][0]["ef_by_query"] = per
    rewrite_manifest(store, "v1", {"shards": manifest["shards"]})
    with pytest.raises(ArtifactError, match="ef_by_query"):
        load_index(store.uri)
    rewrite_manifest(store, "v1", {"shards": [], "ef_by_query": per})
    with pytest.raises(ArtifactError, match="ef_by_query"):
        load_index(store.uri)
    manifest["shards"][0]["ef_by_query"] = {"image": 10}
    manifest["shards"][0]["recall_by_query"] = {"image": 1.5}
    rewrite_manifest(store, "v1", {"shards": manifest["shards"], "ef_by_query": None})
    with pytest.raises(ArtifactError, match="recall_by_query"):
        load_index(store.uri)


def test_the_caller_searches_the_first_shard_and_a_pool_the_others(
    tmp_path: Path, data: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from handler.core.shards import Shard

    store = open_store(tmp_path)
    build(store, "v1", data, items_for(400), shard_size=100)
    index = load_index(store.uri)
    index.shards.parallel = True
    sequential = load_index(store.uri)
    sequential.shards.parallel = False
    where: dict[int, str] = {}
    real = Shard.knn

    def spy(s: Shard, q: np.ndarray, want: int, ef: int, allowed: np.ndarray | None = None) -> Any:
        where[s.offset] = threading.current_thread().name
        if s.offset == 0 and q[0, 0] > 10:  # a marked query: the first shard fails
            raise RuntimeError("shard 0 failed")
        return real(s, q, want, ef, allowed)

    monkeypatch.setattr(Shard, "knn", spy)
    for q in data[:5]:
        want = [h.label for h in sequential.search(q, k=12)[0]]
        where.clear()
        assert [h.label for h in index.search(q, k=12)[0]] == want
    assert where[0] == threading.current_thread().name
    assert all(where[o].startswith("shard") for o in (100, 200, 300)), where
    where.clear()
    with pytest.raises(RuntimeError, match="shard 0 failed"):
        index.search(np.full(16, 11.0, dtype=np.float32), k=3)
    assert set(where) == {0, 100, 200, 300}  # the others ran (and were waited for)
