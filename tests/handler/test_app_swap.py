"""Index hot swap on a local index: pointer moves are picked up between requests, a broken version keeps
the old index, the refresh interval is honoured, and concurrent requests never mix versions."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from handler.app import create_app
from handler.core.storage import open_store
from handler.state import ServiceState
from tests.conftest import index_file_key
from tests.handler.conftest import make_settings, write_index


def versioned(items: list[dict[str, Any]], version: str) -> list[dict[str, Any]]:
    return [{**item, "id": f"{version}:{item['id']}"} for item in items]


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(100, len(data), 997):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))  # same size: only the checksum can tell


def events(out: str, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("event") == name]


@pytest.fixture
def swap_setup(
    tmp_path: Path, demo_bundle: Path, demo_embedder: Any, demo_collection: Any
) -> tuple[Path, Any, list[dict[str, Any]], np.ndarray]:
    images_dir, items, vectors = demo_collection
    index_dir = tmp_path / "index"
    write_index(index_dir, demo_embedder, versioned(items[:64], "v1"), vectors[:64], "v1", str(images_dir))
    return index_dir, demo_embedder, items, vectors


def test_hot_swap_and_broken_version(
    swap_setup: Any, demo_bundle: Path, demo_collection: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    index_dir, emb, items, vectors = swap_setup
    source = str(demo_collection[0])
    state = ServiceState(make_settings(demo_bundle, index_dir, INDEX_REFRESH_SECONDS=0)).load()
    client = TestClient(create_app(state))

    def search() -> dict[str, Any]:
        r = client.post("/search", json={"text": "a red circle", "k": 5})
        assert r.status_code == 200, r.text
        return r.json()

    first = search()
    assert first["index_version"] == "v1" and all(r["id"].startswith("v1:") for r in first["results"])
    write_index(index_dir, emb, versioned(items[:128], "v2"), vectors[:128], "v2", source)
    second = search()  # the very next request sees the new version
    assert second["index_version"] == "v2" and all(r["id"].startswith("v2:") for r in second["results"])
    assert client.get("/info").json()["index"]["count"] == 128 and state.swaps == 1
    # thumbnails of the new version's items are served
    assert client.get(second["results"][0]["thumbnail_url"]).status_code == 200

    # a broken version (bad checksum) is refused and the old index stays
    capsys.readouterr()
    write_index(index_dir, emb, versioned(items[:32], "v3"), vectors[:32], "v3", source)
    corrupt(index_dir / index_file_key(open_store(index_dir), "v3", "hnsw"))
    third = search()
    assert third["index_version"] == "v2"
    assert client.get("/health").status_code == 200
    fourth = search()
    assert fourth["index_version"] == "v2"
    out = capsys.readouterr().out
    failed = events(out, "index_swap_failed")
    assert len(failed) == 1, "a failed version is not retried on every request"
    assert failed[0]["wanted_version"] == "v3" and failed[0]["kept_version"] == "v2"
    assert "sha256" in failed[0]["message"] and failed[0]["level"] == "ERROR"
    assert all(line["index_version"] == "v2" for line in events(out, "request"))

    # the next good version is picked up
    write_index(index_dir, emb, versioned(items[:16], "v4"), vectors[:16], "v4", source)
    assert search()["index_version"] == "v4" and state.swaps == 2


def test_refresh_interval(swap_setup: Any, demo_bundle: Path, demo_collection: Any) -> None:
    index_dir, emb, items, vectors = swap_setup
    state = ServiceState(make_settings(demo_bundle, index_dir, INDEX_REFRESH_SECONDS=30)).load()
    client = TestClient(create_app(state))
    assert client.post("/search", json={"text": "a", "k": 1}).json()["index_version"] == "v1"
    write_index(index_dir, emb, versioned(items[:10], "v2"), vectors[:10], "v2", str(demo_collection[0]))
    assert client.post("/search", json={"text": "a", "k": 1}).json()["index_version"] == "v1"  # not yet due
    state.maybe_refresh(now=time.monotonic() + 31)
    assert client.post("/search", json={"text": "a", "k": 1}).json()["index_version"] == "v2"


def test_index_published_after_start(
    tmp_path: Path, demo_bundle: Path, demo_embedder: Any, demo_collection: Any
) -> None:
    images_dir, items, vectors = demo_collection
    index_dir = tmp_path / "late-index"
    state = ServiceState(make_settings(demo_bundle, index_dir, INDEX_REFRESH_SECONDS=0)).load()
    client = TestClient(create_app(state))
    assert client.get("/health").status_code == 503
    write_index(index_dir, demo_embedder, items[:20], vectors[:20], "first", str(images_dir))
    assert client.get("/health").status_code == 200
    assert client.post("/search", json={"text": "a", "k": 3}).json()["index_version"] == "first"


def test_concurrent_requests_never_mix_versions(
    swap_setup: Any, demo_bundle: Path, demo_collection: Any
) -> None:
    index_dir, emb, items, vectors = swap_setup
    state = ServiceState(make_settings(demo_bundle, index_dir, INDEX_REFRESH_SECONDS=0)).load()
    app = create_app(state)
    seen: list[tuple[str, list[str]]] = []
    errors: list[str] = []
    stop = threading.Event()

    def worker(seed: int) -> None:
        client = TestClient(app)
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            body = {"embedding": vectors[int(rng.integers(len(vectors)))].tolist(), "k": 10}
            r = client.post("/search", json=body)
            if r.status_code != 200:
                errors.append(r.text)
                continue
            data = r.json()
            seen.append((data["index_version"], [x["id"] for x in data["results"]]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        for n in range(2, 6):
            version = f"v{n}"
            count = 40 + 30 * n
            write_index(
                index_dir,
                emb,
                versioned(items[:count], version),
                vectors[:count],
                version,
                str(demo_collection[0]),
            )
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:3]
    assert len({v for v, _ in seen}) >= 3, "swaps happened while requests were running"
    for version, ids in seen:
        assert ids and all(i.startswith(version + ":") for i in ids), (version, ids[:3])
