"""The Lambda entry point on artifacts in S3 (a real SeaweedFS server): cached, checksum-verified loading,
queries, hot swap on a pointer move, a broken version keeping the old index, presigned item URLs."""

from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from handler.core.storage import open_store
from index_builder.publish import publish
from index_builder.version_write import write_version
from tests.conftest import index_file_key
from tests.handler.conftest import collection_items, write_index
from tests.handler.test_app_swap import corrupt, events, versioned
from tests.handler.test_lambda import invoke, lambda_module, load_event

pytestmark = pytest.mark.s3


def upload_dir(local: Path, uri: str) -> None:
    store = open_store(uri)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            store.upload_file(path.relative_to(local).as_posix(), path)


def search(module: Any, text: str = "a red circle", k: int = 5) -> dict[str, Any]:
    event = load_event("search-text.json")
    event["body"] = json.dumps({"text": text, "k": k})
    status, _, body = invoke(module, event)
    assert status == 200, body
    return body


def test_s3_artifacts_hot_swap_and_broken_version(
    s3_server: Any,
    demo_bundle: Path,
    demo_embedder: Any,
    demo_collection: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = s3_server.make_bucket()
    model_uri, index_uri = f"s3://{bucket}/models/demo", f"s3://{bucket}/indexes/demo"
    upload_dir(demo_bundle, model_uri)
    images_dir, items, vectors = demo_collection
    write_index(index_uri, demo_embedder, versioned(items, "v1"), vectors, "v1", str(images_dir))
    cache = tmp_path / "cache"

    with lambda_module(
        MODEL_URI=model_uri, INDEX_URI=index_uri, CACHE_DIR=cache, INDEX_REFRESH_SECONDS=0, ORT_THREADS=2
    ) as module:
        assert module.state.healthy(), module.state.problems()
        status, _, health = invoke(module, load_event("health.json"))
        assert status == 200 and health["index"]["version"] == "v1"
        assert any(cache.rglob("textual.onnx")) and any(cache.rglob("*.hnsw"))  # cached under CACHE_DIR
        body = search(module)
        assert body["index_version"] == "v1"
        assert [r["metadata"]["colour"] for r in body["results"]][:3] == ["red"] * 3
        status, _, emb = invoke(module, load_event("embeddings.json"))
        assert status == 200 and len(emb["text_embeddings"]) == 2
        # local item files still served (the collection is local, the index is in S3)
        status, headers, _ = invoke(
            module,
            {**load_event("item-thumbnail.json")}
            | _path("item-thumbnail.json", f"/items/{body['results'][0]['id']}/thumbnail"),
        )
        assert status == 200 and headers["content-type"] == "image/jpeg"

        # pointer move: the next request after INDEX_REFRESH_SECONDS=0 uses the new version
        write_index(
            index_uri, demo_embedder, versioned(items[:100], "v2"), vectors[:100], "v2", str(images_dir)
        )
        body = search(module)
        assert body["index_version"] == "v2" and all(r["id"].startswith("v2:") for r in body["results"])
        status, _, info = invoke(module, load_event("info.json"))
        assert info["index"]["count"] == 100

        # a broken version (bad checksum) is refused: the old index stays, health stays 200
        capsys.readouterr()
        store = open_store(index_uri)
        m = write_version(
            store,
            "v3",
            vectors=vectors[:50],
            items=versioned(items[:50], "v3"),
            manifest_fields={"model_fingerprint": demo_embedder.model_fingerprint, "source": None},
        )
        bad = tmp_path / "index.hnsw"
        hnsw_key = index_file_key(store, "v3", "hnsw")
        store.download_file(hnsw_key, bad)
        corrupt(bad)
        store.upload_file(hnsw_key, bad)
        publish(store, "v3", m)  # publish checks sizes only; readers check checksums
        assert search(module)["index_version"] == "v2"
        assert search(module)["index_version"] == "v2"
        assert invoke(module, load_event("health.json"))[0] == 200
        failed = events(capsys.readouterr().out, "index_swap_failed")
        assert len(failed) == 1 and failed[0]["wanted_version"] == "v3" and "sha256" in failed[0]["message"]

        # and a later good version still gets in
        write_index(
            index_uri, demo_embedder, versioned(items[:30], "v4"), vectors[:30], "v4", str(images_dir)
        )
        assert search(module)["index_version"] == "v4"


def _path(name: str, path: str) -> dict[str, Any]:
    event = load_event(name)
    event["rawPath"] = path
    event["requestContext"]["http"]["path"] = path
    return event


def test_s3_bundle_checksums_and_cache_reuse(s3_server: Any, demo_bundle: Path, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket()
    good, bad = f"s3://{bucket}/good", f"s3://{bucket}/bad"
    upload_dir(demo_bundle, good)
    upload_dir(demo_bundle, bad)
    broken = tmp_path / "textual.onnx"
    open_store(bad).download_file("textual.onnx", broken)
    corrupt(broken)
    open_store(bad).upload_file("textual.onnx", broken)
    with lambda_module(MODEL_URI=bad, CACHE_DIR=tmp_path / "c1") as module:
        status, _, health = invoke(module, load_event("health.json"))
        assert status == 503 and health["problems"][0]["component"] == "model"
        assert "sha256" in health["reason"] and "textual.onnx" in health["reason"]
    with lambda_module(MODEL_URI=good, CACHE_DIR=tmp_path / "c2") as module:
        assert invoke(module, load_event("health.json"))[0] == 200  # embedding-only deployment
        assert invoke(module, load_event("embeddings.json"))[0] == 200
    with lambda_module(MODEL_URI=good, CACHE_DIR=tmp_path / "c2") as module:  # a warm /tmp: cache reused
        assert module.state.healthy()


def test_s3_item_images_get_presigned_urls(
    s3_server: Any, demo_bundle: Path, demo_embedder: Any, demo_collection: Any, tmp_path: Path
) -> None:
    bucket = s3_server.make_bucket()
    images_dir, items, vectors = demo_collection
    store = open_store(f"s3://{bucket}/images")
    rows = []
    for item in collection_items(images_dir, [Path(i["uri"]) for i in items[:8]]):
        store.upload_file(item["id"], Path(item["uri"]))
        rows.append({**item, "uri": store.uri_for(item["id"])})
    index_uri = f"s3://{bucket}/index"
    write_index(index_uri, demo_embedder, rows, vectors[:8], "v1", store.uri)
    with lambda_module(
        MODEL_URI=demo_bundle, INDEX_URI=index_uri, CACHE_DIR=tmp_path, PRESIGN_EXPIRY_SECONDS=120
    ) as module:
        body = search(module, k=3)
        for result in body["results"]:
            url = result["image_url"]
            assert url.startswith(s3_server.endpoint) and "X-Amz-Expires=120" in url
            assert result["thumbnail_url"] == url
            assert result["uri"] == result["id"]  # the key relative to the source prefix: no bucket name
            with urllib.request.urlopen(url, timeout=10) as resp:  # the presigned URL really works
                data = resp.read()
            assert data == Path(images_dir / result["id"]).read_bytes()
            from PIL import Image

            assert Image.open(io.BytesIO(data)).size == (96, 96)
        # item routes do not proxy S3 objects
        status, _, err = invoke(module, _path("item-image.json", f"/items/{body['results'][0]['id']}/image"))
        assert status == 404 and err["error"]["code"] == "unknown_id"
