"""handler.core.index, the cold path: what is fetched in which order (fetch_plan), items parsed while the
HNSW files still download, the items parse (one C call; bad lines still named)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handler.core import index as index_module
from handler.core.errors import ArtifactError
from handler.core.index import fetch_plan, load_index
from handler.core.index_format import read_manifest, read_pointer
from handler.core.storage import S3Store, open_store
from index_builder.publish import publish
from index_builder.version_write import write_version
from tests.conftest import normalized_vectors

FP = "sha256:" + "ab" * 32


def build_two_shards(uri: str) -> dict[str, Any]:
    store = open_store(uri)
    vectors = normalized_vectors(120, 16, clusters=4, seed=2)
    items = [{"id": f"img-{i}"} for i in range(len(vectors))]
    manifest = write_version(
        store, "v1", vectors=vectors, items=items, manifest_fields={"model_fingerprint": FP}, shard_size=60
    )
    publish(store, "v1", manifest)
    return manifest


def test_fetch_plan_items_first_then_hnsw_in_shard_order(tmp_path: Path) -> None:
    manifest = build_two_shards(str(tmp_path))
    shards = manifest["shards"]
    keys = [
        f"shards/{s['files'][p]['sha256']}{ext}"
        for p, ext in (("items", ".jsonl"), ("hnsw", ".hnsw"))
        for s in shards
    ]
    assert list(fetch_plan(manifest, local=False)) == keys  # no embeddings on the cold path
    with_emb = list(fetch_plan(manifest, local=False, fetch_embeddings=True))
    assert with_emb[:4] == keys and all(k.endswith(".npy") for k in with_emb[4:]) and len(with_emb) == 6
    local = fetch_plan(manifest, local=True, verify=False)
    assert "versions/v1/errors.jsonl" in local and all(e["sha256"] is None for e in local.values())
    assert all(e["sha256"] for e in fetch_plan(manifest, local=False).values())  # S3: always hashed


@pytest.mark.s3
def test_items_are_parsed_while_the_hnsw_files_download(
    s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Structural, not timed: the first HNSW GET is held until every shard's items are parsed."""
    uri = f"s3://{s3_server.make_bucket()}/index"
    build_two_shards(uri)
    parsed: list[str] = []
    all_parsed = threading.Event()
    real_items, real_get = index_module._load_items, S3Store.read_range

    def items(path: Path, *a: Any) -> list[dict[str, Any]]:
        rows = real_items(path, *a)
        parsed.append(path.name)
        if len(parsed) == 2:
            all_parsed.set()
        return rows

    held: list[bool] = []

    def get(self: S3Store, key: str, start: int, end: int) -> tuple[bytes, int]:
        if key.endswith(".hnsw"):  # every HNSW part waits (the first one long enough to fail the test)
            held.append(all_parsed.wait(20))
        return real_get(self, key, start, end)

    monkeypatch.setattr(index_module, "_load_items", items)
    monkeypatch.setattr(S3Store, "read_range", get)
    index = load_index(uri, cache_dir=tmp_path / "cache")
    assert held and all(held) and len(parsed) == 2
    assert index.count == 120 and index.get_item("img-77") is not None


def test_items_parse_is_one_json_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "items.jsonl"
    rows = [{"id": i, "path": f"p/{i}.jpg", "caption": "a\u2028b"} for i in range(200)]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    calls: list[int] = []
    real = json.loads
    monkeypatch.setattr(json, "loads", lambda s, *a, **k: (calls.append(1), real(s, *a, **k))[1])
    assert index_module._load_items(path, 200, "w") == rows
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": 1}\n\n{"id": 2\n', "line 3 is not valid JSON"),
        ('{"id": 1}\n[1, 2]\n', "line 2 is not a JSON object"),
        ('{"id": 1},{"id": 2}\n', "line 1 is not valid JSON"),
        ('{"id": 1}\n', "has 1 items, manifest says 2"),
    ],
)
def test_bad_items_are_refused_by_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ArtifactError, match=message):
        index_module._load_items(path, 2, "w")


def test_loaded_items_equal_the_builders(tmp_path: Path) -> None:
    build_two_shards(str(tmp_path))
    store = open_store(str(tmp_path))
    pointer = read_pointer(store)
    assert pointer is not None
    manifest = read_manifest(store, pointer["version"], pointer["manifest_sha256"])
    index = load_index(str(tmp_path))
    assert index.count == manifest["count"] == 120
    assert sorted(it["id"] for it in index.items) == sorted(f"img-{i}" for i in range(120))
    assert np.all(index.live_mask())
