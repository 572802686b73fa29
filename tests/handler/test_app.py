"""The search service through FastAPI's TestClient: search quality on the demo model, embeddings parity,
paging, item images, info/health, API key, CORS."""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.handler.conftest import make_client, make_settings, render_png


def _search(client: Any, **body: Any) -> dict[str, Any]:
    r = client.post("/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _labels(results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["metadata"]["colour"], r["metadata"]["shape"]) for r in results]


# -- search quality (demo model) -----------------------------------------------------------------------------


def test_text_query_returns_red_circles_first(demo_client: Any) -> None:
    body = _search(demo_client, text="a red circle", k=5)
    assert body["query"] == {"type": "text", "text": "a red circle", "truncated": False, "k": 5, "offset": 0}
    labels = _labels(body["results"])
    assert labels == [("red", "circle")] * 5, labels  # the index holds 8 red circles
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert body["model"] == "demo-clip" and body["index_version"] == "v0001" and body["took_ms"] > 0


def test_image_query_returns_blue_squares_first(demo_client: Any) -> None:
    png = render_png("blue", "square", seed=12345)
    for image in (base64.b64encode(png).decode(), "data:image/png;base64," + base64.b64encode(png).decode()):
        body = _search(demo_client, image=image, k=5)
        labels = _labels(body["results"])
        assert labels == [("blue", "square")] * 5, labels
        assert body["query"]["type"] == "image"
        assert body["query"]["bytes"] == len(png) and body["query"]["width"] == 96


def test_multipart_image_and_text(demo_client: Any) -> None:
    png = render_png("blue", "square", seed=12345)
    r = demo_client.post("/search", files={"image": ("q.png", png, "image/png")}, data={"k": "4"})
    assert r.status_code == 200, r.text
    assert _labels(r.json()["results"])[0] == ("blue", "square")
    assert len(r.json()["results"]) == 4
    r = demo_client.post("/search", files={"text": (None, "a red circle")})
    assert r.status_code == 200, r.text
    assert r.json()["query"]["type"] == "text" and len(r.json()["results"]) == 10
    # a raw image body works too (curl --data-binary @cat.jpg -H 'content-type: image/png')
    r = demo_client.post("/search?k=3", content=png, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 3 and _labels(r.json()["results"])[0] == ("blue", "square")


def test_result_shape(demo_client: Any, demo_index: tuple[Path, Path]) -> None:
    body = _search(demo_client, text="a green star", k=3)
    assert set(body) == {"results", "query", "model", "index_version", "took_ms"}
    for r in body["results"]:
        assert set(r) == {"id", "uri", "score", "metadata", "image_url", "thumbnail_url"}
        assert r["uri"] == r["id"] and not r["uri"].startswith("/")  # relative: no server path (issue 11 #19)
        assert r["image_url"] == f"/items/{r['id']}/image"
        assert r["thumbnail_url"] == f"/items/{r['id']}/thumbnail"
        assert set(r["metadata"]) == {"colour", "shape", "caption"}


def test_embedding_and_id_queries(demo_client: Any, demo_embedder: Any) -> None:
    vec = demo_embedder.embed_texts(["a yellow triangle"])[0]
    by_text = _search(demo_client, text="a yellow triangle", k=8)
    by_vec = _search(demo_client, embedding=[float(x) * 3.5 for x in vec], k=8)  # not normalised: fine
    assert [r["id"] for r in by_vec["results"]] == [r["id"] for r in by_text["results"]]
    assert by_vec["query"] == {"type": "embedding", "dim": demo_embedder.dim, "k": 8, "offset": 0}
    np.testing.assert_allclose(
        [r["score"] for r in by_vec["results"]], [r["score"] for r in by_text["results"]], atol=1e-5
    )
    first = by_text["results"][0]
    similar = _search(demo_client, id=first["id"], k=5)
    assert similar["query"]["type"] == "id" and similar["query"]["id"] == first["id"]
    assert first["id"] not in [r["id"] for r in similar["results"]]  # the item itself is excluded
    assert len(similar["results"]) == 5
    cls = (first["metadata"]["colour"], first["metadata"]["shape"])
    assert Counter(_labels(similar["results"]))[cls] >= 4, (cls, _labels(similar["results"]))
    # paging "more like this" skips the item too
    page2 = _search(demo_client, id=first["id"], k=5, offset=5)
    assert not {r["id"] for r in page2["results"]} & ({r["id"] for r in similar["results"]} | {first["id"]})


def test_paging_and_min_score(demo_client: Any) -> None:
    full = _search(demo_client, text="a purple square", k=30)["results"]
    assert len(full) == 30
    pages = [_search(demo_client, text="a purple square", k=10, offset=o)["results"] for o in (0, 10, 20)]
    assert [r["id"] for p in pages for r in p] == [r["id"] for r in full]
    threshold = full[7]["score"]
    above = _search(demo_client, text="a purple square", k=30, min_score=threshold)
    assert [r["id"] for r in above["results"]] == [r["id"] for r in full if r["score"] >= threshold]
    assert above["query"]["min_score"] == threshold
    assert _search(demo_client, text="a purple square", min_score=1.0)["results"] == []
    # past the end of the collection: an empty page, not an error
    assert _search(demo_client, text="a purple square", k=100, offset=1000)["results"] == []
    assert len(_search(demo_client, text="a purple square", k=100, offset=200)["results"]) == 56
    assert len(_search(demo_client, text="a purple square", k=5, ef=400)["results"]) == 5


def test_long_text_is_truncated_and_reported(demo_client: Any, demo_embedder: Any) -> None:
    text = "a red circle " + "and a blue square " * 60
    body = _search(demo_client, text=text, k=3)
    assert body["query"]["truncated"] is True and body["query"]["text"] == text
    huge = "red " * 30_000  # over MAX_TEXT_CHARS: cut before tokenising, still truncated as CLIP would
    body2 = _search(demo_client, text=huge, k=3)
    assert body2["query"]["truncated"] is True
    want = demo_embedder.embed_texts([huge])[0]
    got = _search(demo_client, embedding=want.tolist(), k=3)
    assert [r["id"] for r in got["results"]] == [r["id"] for r in body2["results"]]


# -- embeddings ----------------------------------------------------------------------------------------------


def test_embeddings_match_runtime(demo_client: Any, demo_embedder: Any) -> None:
    texts = ["a red circle", "a photo of a white star", "x " * 200]
    pngs = [render_png("blue", "square"), render_png("orange", "triangle", seed=3)]
    r = demo_client.post(
        "/embeddings", json={"text": texts, "image": [base64.b64encode(p).decode() for p in pngs]}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "demo-clip" and body["dim"] == demo_embedder.dim == 128
    assert body["model_fingerprint"] == demo_embedder.model_fingerprint and body["normalized"] is True
    np.testing.assert_allclose(np.array(body["text_embeddings"]), demo_embedder.embed_texts(texts), atol=1e-6)
    np.testing.assert_allclose(
        np.array(body["image_embeddings"]), demo_embedder.embed_images(pngs), atol=1e-6
    )
    assert body["text_truncated"] == [False, False, True]
    # single values (not lists) and one modality at a time
    one = demo_client.post("/embeddings", json={"text": "a red circle"}).json()
    assert "image_embeddings" not in one and len(one["text_embeddings"]) == 1
    np.testing.assert_allclose(one["text_embeddings"][0], body["text_embeddings"][0], atol=1e-6)
    img = demo_client.post(
        "/embeddings", json={"image": "data:image/png;base64," + base64.b64encode(pngs[0]).decode()}
    )
    assert "text_embeddings" not in img.json()
    np.testing.assert_allclose(img.json()["image_embeddings"][0], body["image_embeddings"][0], atol=1e-6)


def test_language_refused_by_a_model_without_languages(demo_client: Any) -> None:
    """Only NLLB tokenizers take `language` (issue 16); the CLIP BPE demo model answers 400 invalid_text."""
    for r in (
        demo_client.post("/embeddings", json={"text": "a", "language": "fra_Latn"}),
        demo_client.post("/search", json={"text": "a", "language": "fra_Latn"}),
        demo_client.post("/search", data={"text": "a", "language": "fra_Latn"}),
    ):
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_text", r.text


def test_embeddings_only_deployment(demo_bundle: Path) -> None:
    client = make_client(make_settings(demo_bundle))
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["mode"] == "embedding-only"
    r = client.post("/embeddings", json={"text": "a red circle"})
    assert r.status_code == 200 and len(r.json()["text_embeddings"][0]) == 128
    r = client.post("/search", json={"text": "a red circle"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "index_unavailable"
    assert "INDEX_URI" in r.json()["error"]["message"]
    info = client.get("/info").json()
    assert info["index"] is None and info["model"]["dim"] == 128


# -- health / info / docs / page -----------------------------------------------------------------------------


def test_health_info_docs_page(demo_client: Any, demo_embedder: Any) -> None:
    health = demo_client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["index"]["version"] == "v0001"
    info = demo_client.get("/info").json()
    assert info["model"]["model_fingerprint"] == demo_embedder.model_fingerprint
    assert info["model_id"] == "demo-clip"
    assert (
        info["index"]["version"] == "v0001" and info["index"]["count"] == 256 and info["index"]["dim"] == 128
    )
    assert info["parameters"]["k_max"] == 100 and info["parameters"]["max_image_bytes"] == 4_500_000
    assert "api_key" not in json.dumps(info["parameters"]).replace("api_key_required", "")
    assert demo_client.get("/docs").status_code == 200
    spec = demo_client.get("/openapi.json").json()
    assert {"/search", "/embeddings", "/health", "/info"} <= set(spec["paths"])
    content = spec["paths"]["/search"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    page = demo_client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<base href="/">' in page.text and 'id="query"' in page.text
    for asset in ("static/app.js", "static/style.css"):
        assert demo_client.get("/" + asset).status_code == 200


# -- item images ---------------------------------------------------------------------------------------------


def test_item_image_and_thumbnail(demo_client: Any, demo_index: tuple[Path, Path]) -> None:
    result = _search(demo_client, text="a black star", k=1)["results"][0]
    image = demo_client.get(result["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content == (demo_index[1] / result["uri"]).read_bytes()
    thumb = demo_client.get(result["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as img:
        assert max(img.size) <= 256
    cache = demo_client.app.state.thumbnails
    hits = cache.hits
    again = demo_client.get(result["thumbnail_url"])
    assert again.content == thumb.content and cache.hits == hits + 1  # served from the LRU
    etag = thumb.headers["etag"]
    assert demo_client.get(result["thumbnail_url"], headers={"if-none-match": etag}).status_code == 304


@pytest.mark.parametrize(
    "path",
    [
        "/items/..%2F..%2F..%2Fetc%2Fpasswd/image",
        "/items/../../../../etc/passwd/image",
        "/items/%2Fetc%2Fpasswd/image",
        "/items//etc/passwd/image",
        "/items/img_00000.jpg%00/image",
        "/items/nonexistent/thumbnail",
        "/items/set_a/../../img_00000.jpg/image",
        "/items/manifest.json/image",
    ],
)
def test_item_routes_refuse_paths_outside_the_index(demo_client: Any, path: str) -> None:
    r = demo_client.get(path)
    assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert r.json()["error"]["code"] in ("unknown_id", "not_found")


def test_item_routes_refuse_files_outside_the_collection(
    demo_bundle: Path, demo_embedder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.handler.conftest import write_index

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")  # presigning is local: no request is sent
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")

    root = tmp_path / "collection"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), "red").save(outside)
    inside = root / "sub" / "ok.png"
    Image.new("RGB", (8, 8), "blue").save(inside)
    (root / "link.png").symlink_to(outside)
    (root / "notes.txt").write_text("not an image")
    rows = [
        {"id": "ok", "uri": str(inside)},
        {"id": "relative", "uri": "sub/ok.png"},
        {"id": "file-uri", "uri": inside.as_uri()},
        {"id": "absolute-outside", "uri": str(outside)},
        {"id": "dotdot", "uri": "../secret.png"},
        {"id": "dotdot-abs", "uri": f"{root}/sub/../../secret.png"},
        {"id": "symlink", "uri": str(root / "link.png")},
        {"id": "not-image", "uri": str(root / "notes.txt")},
        {"id": "dir", "uri": str(root / "sub")},
        {"id": "missing", "uri": str(root / "gone.png")},
        {"id": 7, "uri": "sub/ok.png"},
        {"id": "s3", "uri": "s3://bucket/key.png"},
    ]
    vectors = demo_embedder.embed_texts([f"item {i}" for i in range(len(rows))])
    index_dir = tmp_path / "index"
    write_index(index_dir, demo_embedder, rows, vectors, "v1", str(root))
    client = make_client(make_settings(demo_bundle, index_dir))
    for item_id in ("ok", "relative", "file-uri", "7"):
        r = client.get(f"/items/{item_id}/image")
        assert r.status_code == 200, (item_id, r.text)
        assert r.content == inside.read_bytes()
        assert client.get(f"/items/{item_id}/thumbnail").status_code == 200
    for item_id in (
        "absolute-outside",
        "dotdot",
        "dotdot-abs",
        "symlink",
        "not-image",
        "dir",
        "missing",
        "s3",
    ):
        for kind in ("image", "thumbnail"):
            r = client.get(f"/items/{item_id}/{kind}")
            assert r.status_code == 404, (item_id, kind, r.status_code)
            assert r.json()["error"]["code"] == "unknown_id"
    # results: local items link to the app, s3 items to presigned URLs, unservable ones to nothing
    results = {r["id"]: r for r in _search(client, text="item", k=12)["results"]}
    assert results["ok"]["image_url"] == "/items/ok/image"
    assert results["absolute-outside"]["image_url"] is None
    s3_url = results["s3"]["image_url"]
    assert s3_url.startswith("https://") and "bucket" in s3_url and "key.png" in s3_url
    assert "X-Amz-Signature" in s3_url and "eu-west-1" in s3_url
    assert "X-Amz-Expires=3600" in results["s3"]["image_url"]
    # COLLECTION_ROOT moves the collection (an index built elsewhere): absolute paths are re-rooted
    moved = tmp_path / "moved"
    (moved / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8), "green").save(moved / "sub" / "ok.png")
    client2 = make_client(
        make_settings(demo_bundle, index_dir, COLLECTION_ROOT=moved, PRESIGN_EXPIRY_SECONDS=60)
    )
    r = client2.get("/items/ok/image")
    assert r.status_code == 200 and r.content == (moved / "sub" / "ok.png").read_bytes()
    assert client2.get("/items/relative/image").content == (moved / "sub" / "ok.png").read_bytes()
    assert client2.get("/items/absolute-outside/image").status_code == 404
    results2 = {r["id"]: r for r in _search(client2, text="item", k=12)["results"]}
    assert "X-Amz-Expires=60" in results2["s3"]["image_url"]


# -- API key and CORS ----------------------------------------------------------------------------------------


def test_api_key(demo_bundle: Path, demo_index: tuple[Path, Path]) -> None:
    client = make_client(make_settings(demo_bundle, demo_index[0], API_KEY="s3cret-key-123"))
    for method, path, kwargs in [
        ("post", "/search", {"json": {"text": "a red circle"}}),
        ("post", "/embeddings", {"json": {"text": "a"}}),
        ("get", "/info", {}),
        ("get", "/docs", {}),
        ("get", "/openapi.json", {}),
        ("get", "/items/img_00000.jpg/thumbnail", {}),
        ("get", "/nope", {}),
    ]:
        r = getattr(client, method)(path, **kwargs)
        assert r.status_code == 401, (path, r.status_code)
        assert r.json()["error"]["code"] == "unauthorized"
        r = getattr(client, method)(path, headers={"x-api-key": "wrong"}, **kwargs)
        assert r.status_code == 401 and r.json()["error"]["message"] == "invalid API key"
        r = getattr(client, method)(path, headers={"x-api-key": "s3cret-key-123"}, **kwargs)
        assert r.status_code == (404 if path == "/nope" else 200), (path, r.status_code)
    for path in ("/health", "/", "/static/app.js"):
        assert client.get(path).status_code == 200


def test_cors(demo_bundle: Path, demo_index: tuple[Path, Path], demo_client: Any) -> None:
    origin = "https://search.example.com"
    client = make_client(
        make_settings(
            demo_bundle,
            demo_index[0],
            CORS_ORIGINS=f"{origin}, http://localhost:3000",
            API_KEY="s3cret-key-123",
        )
    )
    r = client.post(
        "/search", json={"text": "a red circle"}, headers={"origin": origin, "x-api-key": "s3cret-key-123"}
    )
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
    pre = client.options(
        "/search",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-api-key",
        },
    )
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == origin
    assert "x-api-key" in pre.headers["access-control-allow-headers"].lower()
    denied = client.post("/search", json={"text": "x"}, headers={"origin": origin})  # 401 still carries CORS
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == origin
    other = client.post(
        "/search",
        json={"text": "a"},
        headers={"origin": "https://evil.example", "x-api-key": "s3cret-key-123"},
    )
    assert "access-control-allow-origin" not in other.headers
    # unset CORS_ORIGINS: no CORS headers at all
    r = demo_client.post("/search", json={"text": "a red circle"}, headers={"origin": origin})
    assert "access-control-allow-origin" not in r.headers


def test_request_log_lines(demo_client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    secret_text = "a very private query about a red circle"
    demo_client.post("/search", json={"text": secret_text, "k": 4})
    png = render_png("blue", "square")
    demo_client.post("/search", json={"image": base64.b64encode(png).decode()})
    demo_client.post("/search", json={"text": ""})
    out = capsys.readouterr().out
    assert secret_text not in out and base64.b64encode(png).decode()[:40] not in out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert len(requests) == 3
    text, image, bad = requests
    assert text["route"] == "/search" and text["method"] == "POST" and text["status"] == 200
    assert text["query_type"] == "text" and text["k"] == 4 and text["text_length"] == len(secret_text)
    assert text["index_version"] == "v0001" and text["latency_ms"] > 0 and text["truncated"] is False
    emf = text["_aws"]["CloudWatchMetrics"][0]
    assert emf["Namespace"] == "ClipSearch" and emf["Metrics"] == [
        {"Name": "latency_ms", "Unit": "Milliseconds"}
    ]
    assert emf["Dimensions"] == [["route"]]
    assert image["query_type"] == "image" and image["image_bytes"] == len(png)
    assert bad["status"] == 400 and bad["error"] == "invalid_text"
