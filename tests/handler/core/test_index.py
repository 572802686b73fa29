"""handler.core.index: pointer, manifest checks, loading (local and S3) and search semantics."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handler.core.errors import ArtifactError, BadInputError, ModelMismatchError
from handler.core.index import load_index
from handler.core.index_format import check_for_update, read_pointer, version_prefix
from handler.core.search import Hit, SearchIndex
from handler.core.storage import S3Store, Store, open_store
from index_builder.publish import publish
from index_builder.version_write import write_version
from tests.conftest import index_file_key, normalized_vectors

FP = "sha256:" + "ab" * 32
OTHER_FP = "sha256:" + "cd" * 32


def build(
    store: Store, version: str, vectors: np.ndarray, *, fingerprint: str = FP, **kw: Any
) -> dict[str, Any]:
    """Write and publish a version whose items are ``{"id": "img-<row>", "path": ...}``."""
    items = [{"id": f"img-{i}", "path": f"images/{i}.jpg"} for i in range(len(vectors))]
    manifest = write_version(
        store,
        version,
        vectors=vectors,
        items=items,
        manifest_fields={"model_fingerprint": fingerprint, "precision": "fp32"},
        **kw,
    )
    publish(store, version, manifest)
    return manifest


def rewrite_manifest(store: Store, version: str, changes: dict[str, Any]) -> None:
    """Edit a published manifest and re-point CURRENT at its new sha256 (to test the other checks)."""
    key = version_prefix(version) + "manifest.json"
    manifest = json.loads(store.read_bytes(key))
    manifest.update(changes)
    data = json.dumps(manifest).encode()
    store.write_bytes(key, data)
    store.write_bytes(
        "CURRENT",
        json.dumps({"version": version, "manifest_sha256": hashlib.sha256(data).hexdigest()}).encode(),
    )


def shard_key(store: Store, version: str, part: str, shard: int = 0) -> str:
    """The store key of a shard file (``part``: hnsw, items, embeddings) of a published version."""
    manifest = json.loads(store.read_bytes(version_prefix(version) + "manifest.json"))
    ext = {"hnsw": ".hnsw", "items": ".jsonl", "embeddings": ".npy"}[part]
    return f"shards/{manifest['shards'][shard]['files'][part]['sha256']}{ext}"


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return normalized_vectors(300, 16, clusters=10, seed=1)


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory, vectors: np.ndarray) -> SearchIndex:
    store = open_store(tmp_path_factory.mktemp("idx"))
    build(store, "v1", vectors)
    return load_index(store.uri, expected_fingerprint=FP)


def exact(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def test_round_trip_local(tmp_path: Path, vectors: np.ndarray) -> None:
    store = open_store(tmp_path)
    manifest = build(store, "v1", vectors, ef=50)
    index = load_index(str(tmp_path), expected_fingerprint=FP)
    assert (index.version, index.dim, index.count, index.model_fingerprint) == ("v1", 16, 300, FP)
    assert index.manifest == manifest and index.ef == 50
    assert index.items[7] == {"id": "img-7", "path": "images/7.jpg"}
    [hits] = index.search(vectors[7], k=3)
    assert isinstance(hits[0], Hit) and hits[0].label == 7 and hits[0].item["id"] == "img-7"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    hits[0].item["id"] = "mutated"  # hits carry copies
    assert index.items[7]["id"] == "img-7"
    assert index.get_item("img-7") == {"id": "img-7", "path": "images/7.jpg"}
    assert index.label_for("img-7") == 7 and index.get_item("nope") is None
    np.testing.assert_array_equal(index.embedding(7), vectors[7])
    with pytest.raises(IndexError):
        index.embedding(300)
    assert load_index(f"file://{tmp_path}").version == "v1"  # no expected fingerprint: not checked


def test_recall_at_10(tmp_path: Path) -> None:
    points = normalized_vectors(5300, 64, clusters=50, seed=2)
    data, queries = points[:5000], points[5000:]  # queries: fresh points around the same centres
    store = open_store(tmp_path)
    build(store, "v1", data)
    index = load_index(store.uri)
    got = index.search(queries, k=10)
    truth, truth_scores = exact(data, queries, 10)
    recall = np.mean([len({h.label for h in row} & set(t)) / 10 for row, t in zip(got, truth, strict=True)])
    assert recall >= 0.99, recall
    np.testing.assert_allclose([h.score for h in got[0]], truth_scores[0], atol=1e-5)


def test_paging_and_min_score(small_index: SearchIndex, vectors: np.ndarray) -> None:
    q = vectors[3]
    full = small_index.search(q, k=40)[0]
    _, truth_scores = exact(vectors, q[None], 40)
    np.testing.assert_allclose([h.score for h in full], truth_scores[0], atol=1e-5)
    assert small_index.search(q, k=10, offset=10)[0] == full[10:20]
    assert small_index.search(q, k=10, offset=35, ef=40)[0][:5] == full[35:40]
    # k + offset beyond the collection: fewer results, never an error
    tail = small_index.search(q, k=50, offset=280)[0]
    assert len(tail) == 20
    assert small_index.search(q, k=5, offset=300)[0] == []
    assert len(small_index.search(q, k=1000)[0]) == 300
    threshold = full[12].score
    kept = small_index.search(q, k=40, min_score=threshold)[0]
    assert kept == [h for h in full if h.score >= threshold] and len(kept) >= 13
    paged = small_index.search(q, k=10, offset=5, min_score=threshold)[0]
    assert paged == [h for h in full[5:15] if h.score >= threshold]
    assert small_index.search(q, k=5, min_score=1.01)[0] == []


def test_ef_is_raised_to_k_plus_offset(small_index: SearchIndex, vectors: np.ndarray) -> None:
    hits = small_index.search(vectors[0], k=100, offset=50, ef=1)[0]
    assert len(hits) == 100
    truth, _ = exact(vectors, vectors[:1], 150)
    assert len({h.label for h in hits} & set(truth[0][50:150])) >= 95


def test_batch_queries_and_validation(small_index: SearchIndex, vectors: np.ndarray) -> None:
    results = small_index.search(vectors[:5], k=2)
    assert [row[0].label for row in results] == [0, 1, 2, 3, 4]
    assert small_index.search(np.zeros((0, 16), np.float32), k=3) == []
    assert small_index.search(vectors[:2].astype(np.float64), k=1)[1][0].label == 1
    for bad in (
        {"k": 0},
        {"k": -1},
        {"k": 2.5},
        {"k": 1, "offset": -1},
        {"k": 1, "ef": 0},
        {"k": 1, "min_score": float("nan")},
    ):
        with pytest.raises(BadInputError):
            small_index.search(vectors[0], **bad)
    with pytest.raises(ValueError, match="shape"):
        small_index.search(np.ones(8, np.float32), k=1)
    with pytest.raises(ValueError, match="NaN"):
        small_index.search(np.full(16, np.nan, np.float32), k=1)


def test_concurrent_searches(small_index: SearchIndex, vectors: np.ndarray) -> None:
    cases = [(i, k, ef) for i in range(100) for k, ef in ((5, None), (20, 200), (3, 7))]
    expected = {c: small_index.search(vectors[c[0]], k=c[1], ef=c[2]) for c in cases}
    failures: list[Any] = []

    def worker(shift: int) -> None:
        for case in cases[shift:] + cases[:shift]:
            if small_index.search(vectors[case[0]], k=case[1], ef=case[2]) != expected[case]:
                failures.append(case)

    threads = [threading.Thread(target=worker, args=(s * 7,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_empty_index(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    build(store, "v0", np.zeros((0, 32), np.float32))
    index = load_index(store.uri, expected_fingerprint=FP)
    assert (index.count, index.dim, index.items) == (0, 32, [])
    assert index.search(np.ones(32, np.float32) / np.sqrt(32), k=10) == [[]]
    assert index.search(np.ones((3, 32), np.float32), k=10, offset=5) == [[], [], []]
    assert index.get_item("x") is None
    with pytest.raises(IndexError):
        index.embedding(0)


def test_tampered_file_is_named(tmp_path: Path, vectors: np.ndarray) -> None:
    store = open_store(tmp_path)
    build(store, "v1", vectors)
    items_key = shard_key(store, "v1", "items")
    items = tmp_path / items_key
    original = items.read_bytes()
    items.write_bytes(original.replace(b"img-5", b"img-X"))  # same size, other content
    with pytest.raises(ArtifactError, match=rf"{items_key}.*sha256"):
        load_index(store.uri)
    assert load_index(store.uri, verify=False).items[5]["id"] == "img-X"  # size still checked, hash not
    items.write_bytes(original + b"\n")
    with pytest.raises(ArtifactError, match=rf"{items_key}.*size"):
        load_index(store.uri, verify=False)
    items.write_bytes(original)
    emb_key = shard_key(store, "v1", "embeddings")
    (tmp_path / emb_key).unlink()
    with pytest.raises(ArtifactError, match=rf"{emb_key}.*missing"):
        load_index(store.uri)


def test_local_index_is_hashed_once_per_cache(
    tmp_path: Path, vectors: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files verified at one start are trusted unhashed at the next while unchanged (records in the
    cache dir, not the index dir); embeddings.npy is never hashed on the way to the first answer."""
    from handler.core import hashing
    from handler.core.storage import verified

    monkeypatch.setattr(verified, "RACY_NS", 0)  # the index was just written: see test_verified
    store = open_store(tmp_path / "index")
    build(store, "v1", vectors)
    hashed: list[str] = []
    real = hashing.file_digest
    monkeypatch.setattr(hashing, "file_digest", lambda p: (hashed.append(Path(p).name), real(p))[1])
    cache = tmp_path / "cache"
    load_index(store.uri, cache_dir=cache)
    parts = ("hnsw", "items", "embeddings")
    hnsw, items_key, emb = (Path(index_file_key(store, "v1", p)).name for p in parts)
    assert hnsw in hashed and items_key in hashed and emb not in hashed
    first = len(hashed)
    assert load_index(store.uri, cache_dir=cache).count == 300
    assert len(hashed) == first  # trusted from the records
    assert sorted(p.name for p in (tmp_path / "index").rglob("*") if "verified" in str(p)) == []
    items = tmp_path / "index" / index_file_key(store, "v1", "items")
    items.write_bytes(items.read_bytes().replace(b"img-5", b"img-X"))
    with pytest.raises(ArtifactError, match=rf"{items_key[:12]}.*sha256"):
        load_index(store.uri, cache_dir=cache)
    assert hashed[first:] == [items_key]


def test_manifest_and_pointer_checks(tmp_path: Path, vectors: np.ndarray) -> None:
    store = open_store(tmp_path)
    with pytest.raises(ArtifactError, match="CURRENT"):
        load_index(store.uri)
    assert read_pointer(store) is None
    build(store, "v1", vectors[:20])
    manifest_path = tmp_path / "versions/v1/manifest.json"
    manifest_path.write_bytes(manifest_path.read_bytes().replace(b'"count": 20', b'"count": 21'))
    with pytest.raises(ArtifactError, match="does not match the CURRENT pointer"):
        load_index(store.uri)
    for changes, message in (
        ({"schema_version": 3}, "schema_version"),
        ({"kind": "clip-onnx-bundle"}, "kind"),
        ({"version": "v2"}, "names version"),
        ({"dim": 8}, "holds 20 vectors of 16 floats"),
    ):
        build(store, f"v-{message.split()[0]}", vectors[:20])
        rewrite_manifest(store, f"v-{message.split()[0]}", changes)
        with pytest.raises(ArtifactError, match=message):
            load_index(store.uri)
    for bad in (
        b"not json",
        b"[]",
        b'{"version": "../x", "manifest_sha256": "' + b"0" * 64 + b'"}',
        b'{"version": "v1", "manifest_sha256": "short"}',
    ):
        store.write_bytes("CURRENT", bad)
        with pytest.raises(ArtifactError, match="CURRENT"):
            read_pointer(store)
    store.write_bytes("CURRENT", json.dumps({"version": "gone", "manifest_sha256": "0" * 64}).encode())
    with pytest.raises(ArtifactError, match="manifest missing"):
        load_index(store.uri)


def test_fingerprint_mismatch(tmp_path: Path, vectors: np.ndarray) -> None:
    store = open_store(tmp_path)
    build(store, "v1", vectors[:10], fingerprint=OTHER_FP)
    with pytest.raises(ModelMismatchError) as info:
        load_index(store.uri, expected_fingerprint=FP)
    message = str(info.value)
    assert OTHER_FP in message and FP in message and "rebuild the index" in message
    assert info.value.code == "model_mismatch"


def test_check_for_update(tmp_path: Path, vectors: np.ndarray) -> None:
    store = open_store(tmp_path)
    assert check_for_update(store, None) is None
    build(store, "v1", vectors[:10])
    assert check_for_update(store, None) == "v1"
    assert check_for_update(str(tmp_path), "v1") is None
    build(store, "v2", vectors[10:30])
    assert check_for_update(store, "v1") == "v2"
    index = load_index(store)
    assert (index.version, index.count) == ("v2", 20)


@pytest.mark.s3
def test_round_trip_s3_with_cache(
    s3_server, tmp_path: Path, vectors: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"s3://{s3_server.make_bucket()}/index"
    store = open_store(uri)
    build(store, "v1", vectors)
    cache = tmp_path / "cache"
    index = load_index(uri, expected_fingerprint=FP, cache_dir=cache)
    assert (index.version, index.count) == ("v1", 300)
    assert index.search(vectors[9], k=1)[0][0].label == 9
    np.testing.assert_array_equal(index.embedding(9), vectors[9])  # from the HNSW index (npy not fetched)
    cached = sorted(
        str(p.relative_to(p.parent.parent))
        for p in cache.rglob("*")
        if p.is_file() and ".verified" not in p.parts
    )
    assert cached == sorted([shard_key(store, "v1", "hnsw"), shard_key(store, "v1", "items")])

    downloads: list[str] = []
    real = S3Store.read_range
    monkeypatch.setattr(
        S3Store, "read_range", lambda self, key, *span: (downloads.append(key), real(self, key, *span))[1]
    )
    load_index(uri, cache_dir=cache)
    assert downloads == []  # warm cache, checksums match
    next(cache.rglob("*.jsonl")).write_bytes(b"corrupt")
    assert load_index(uri, cache_dir=cache).items[0]["id"] == "img-0"
    assert downloads == [shard_key(store, "v1", "items")]  # one ranged GET: smaller than a part

    build(store, "v2", vectors[:50])
    assert check_for_update(uri, "v1") == "v2"
    index2 = load_index(uri, cache_dir=cache, fetch_embeddings=True)
    assert index2.count == 50 and index.search(vectors[9], k=1)[0][0].label == 9  # old one still works
    shard_files = sorted(p.name for p in next(cache.rglob("shards")).iterdir())
    v2 = [shard_key(store, "v2", part).split("/")[1] for part in ("hnsw", "items", "embeddings")]
    assert shard_files == sorted(v2)  # files of other versions evicted
    np.testing.assert_array_equal(index2.embedding(9), vectors[9])

    with pytest.raises(ModelMismatchError):
        load_index(uri, expected_fingerprint=OTHER_FP, cache_dir=cache)
    hnsw_key = shard_key(store, "v2", "hnsw")
    store.write_bytes(hnsw_key, b"tampered")
    for p in cache.rglob("*.hnsw"):
        p.unlink()
    with pytest.raises(ArtifactError, match=hnsw_key):
        load_index(uri, cache_dir=cache)


def test_ef_gate_never_changes_ef_under_a_running_search() -> None:
    from handler.core.shards import _EfGate

    class FakeIndex:
        def __init__(self) -> None:
            self.ef = 0
            self.running = 0
            self.lock = threading.Lock()
            self.violations = 0

        def set_ef(self, ef: int) -> None:
            with self.lock:
                if self.running:
                    self.violations += 1
                self.ef = ef

    fake = FakeIndex()
    gate = _EfGate(fake, 10)
    done: list[int] = []

    def worker(efs: list[int]) -> None:
        for ef in efs:
            gate.acquire(ef)
            with fake.lock:
                fake.running += 1
                if fake.ef != ef:
                    fake.violations += 1
            time.sleep(0.0002)
            with fake.lock:
                fake.running -= 1
            gate.release()
        done.append(1)

    threads = [
        threading.Thread(target=worker, args=([10] * 150 if i % 2 else [10, 20, 30] * 50,)) for i in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(done) == 6 and fake.violations == 0
