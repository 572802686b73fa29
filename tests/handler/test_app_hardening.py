"""Service hardening of issue 11 (items 5, 6, 8, 12, 18, 19, 21, 24): big bodies off the event loop,
oversized JSON integers, fixed metric dimensions and the API key on OPTIONS, query/index precision
mismatch, a terse public /health, relative result uris, sniffed item image types, self-hosted Swagger UI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from handler import bodies, fields
from handler.request_errors import InvalidJSONError
from tests.handler.conftest import make_client, make_settings, render_png, write_index

API_KEY = "hardening-key-123"


def assert_error(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) >= {"error"} and isinstance(body["error"]["message"], str)
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


def log_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


# -- 5: parsing and decoding off the event loop --------------------------------------------------------------


def test_json_parsing_and_decoding_run_off_the_event_loop(
    demo_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str]] = []

    def spy(name: str, real: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
                seen.append((name, "event loop"))
            except RuntimeError:
                seen.append((name, "worker thread"))
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(bodies, "parse_json", spy("parse_json", bodies.parse_json))
    monkeypatch.setattr(fields, "decode_image_field", spy("decode", fields.decode_image_field))
    import base64

    png = base64.b64encode(render_png("red", "circle")).decode()
    assert demo_client.post("/search", json={"text": "a red circle", "k": 1}).status_code == 200
    assert demo_client.post("/embeddings", json={"text": "a", "image": png}).status_code == 200
    assert demo_client.post("/search", data={"image": png, "k": "1"}).status_code == 200  # base64 form field
    assert seen and all(where == "worker thread" for _, where in seen), seen
    assert {name for name, _ in seen} == {"parse_json", "decode"}


@contextlib.contextmanager
def uvicorn_server(app: Any) -> Iterator[str]:
    """The app under a real uvicorn on 127.0.0.1 (random port), in a thread."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(3000):
        if server.started:
            break
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_health_answers_while_a_huge_json_body_is_handled(demo_state: Any) -> None:
    """The issue's 6.8 MB embedding array: json.loads of it holds the GIL for seconds, so the loop must
    neither parse it nor wait for a thread that does. /health latency is compared with that parse time."""
    from handler.app import create_app

    body = b'{"embedding": [' + b"0," * 3_400_000 + b"0]}"
    t0 = time.perf_counter()
    json.loads(body)
    parse_s = time.perf_counter() - t0  # how long the loop was blocked before the fix
    status: list[int] = []
    with uvicorn_server(create_app(demo_state)) as url, httpx.Client(timeout=120) as sender:
        # The sender is built and connected before the window: creating an httpx client loads the CA
        # bundle under the GIL, which stalls this process's threads (the server's loop included) and is
        # not what the test measures.
        assert sender.get(url + "/health").status_code == 200
        done = threading.Event()

        def big() -> None:
            try:
                r = sender.post(url + "/search", content=body, headers={"content-type": "application/json"})
                status.append(r.status_code)
            finally:
                done.set()

        latencies = []
        with httpx.Client(timeout=120) as client:
            assert client.get(url + "/health").status_code == 200  # connection warm
            worker = threading.Thread(target=big)
            worker.start()
            while True:
                finished = done.is_set()
                t = time.perf_counter()
                assert client.get(url + "/health").status_code == 200
                latencies.append(time.perf_counter() - t)
                if finished:
                    break
            worker.join()
    assert status == [400]
    assert max(latencies) < 0.5 * parse_s, (max(latencies), parse_s, len(latencies))


def test_json_value_count_is_bounded_before_parsing() -> None:
    with pytest.raises(InvalidJSONError, match="more than"):
        bodies.parse_json(b"[" + b"0," * (bodies.MAX_JSON_VALUES + 1) + b"0]")
    # commas inside strings are not values: 64 texts full of commas are a valid body
    body = json.dumps({"text": ["," * 20_000] * 64}).encode()
    assert len(bodies.parse_json(body)["text"]) == 64
    assert len(bodies.parse_json(json.dumps({"embedding": [0.5] * 65_536}).encode())["embedding"]) == 65_536


# -- 6: JSON integers over 4300 digits -----------------------------------------------------------------------

BIG = "9" * 4301


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/search", '{"text": "a", "k": @}'),
        ("/search", '{"text": "a", "offset": -@}'),
        ("/search", '{"text": "a", "ef": #}'),
        ("/search", '{"text": "a", "min_score": @}'),
        ("/search", '{"embedding": [@, 1, 2]}'),
        ("/search", '{"id": @}'),
        ("/embeddings", '{"text": @}'),
        ("/embeddings", '{"image": [@]}'),
        ("/embeddings", '{"text": "a", "extra": {"n": @}}'),
    ],
)
def test_oversized_json_integers_are_a_400(demo_client: Any, route: str, body: str) -> None:
    body = body.replace("@", BIG).replace("#", "1" * 10_000)
    r = demo_client.post(route, content=body.encode(), headers={"content-type": "application/json"})
    assert_error(r, 400, "invalid_json")
    assert "4300 digits" in r.json()["error"]["message"]


def test_oversized_integers_in_form_and_query_parameters(demo_client: Any) -> None:
    assert_error(demo_client.post("/search", data={"text": "a", "k": BIG}), 400, "invalid_request")
    r = demo_client.post(
        f"/search?k={BIG}", content=render_png("red", "circle"), headers={"content-type": "image/png"}
    )
    assert_error(r, 400, "invalid_request")


# -- 8: metric dimensions and the API key on OPTIONS ---------------------------------------------------------


def test_metric_routes_come_from_a_fixed_set(
    demo_bundle: Path, demo_index: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client(make_settings(demo_bundle, demo_index[0], API_KEY=API_KEY))
    from handler.routes import embeddings, items, meta, search

    routers = (meta.router, search.router, embeddings.router, items.router)  # included lazily by FastAPI
    templates = {
        getattr(r, "path", None) for r in (*client.app.routes, *(r for x in routers for r in x.routes))
    }
    templates -= {None}
    capsys.readouterr()
    key = {"x-api-key": API_KEY}
    # the probe: a trailing-slash OPTIONS without key was a 307 logged with its own path
    assert_error(client.options("/items/rnd-123/image/"), 401, "unauthorized")
    r = client.options("/items/rnd-123/image/", headers=key, follow_redirects=False)
    assert r.status_code == 307
    assert client.get("/items/rnd-456/thumbnail/", headers=key, follow_redirects=False).status_code == 307
    assert client.get("/no/such/route-789", headers=key).status_code == 404
    assert client.get("/static/nope-1.js").status_code == 404
    assert client.post("/search", json={"text": "a red circle"}, headers=key).status_code == 200
    requests = [line for line in log_lines(capsys.readouterr().out) if line.get("event") == "request"]
    assert len(requests) == 6
    routes = [line["route"] for line in requests]
    assert set(routes) <= templates | {"/static", "redirect", "unmatched"}, routes
    assert routes == ["unmatched", "redirect", "redirect", "unmatched", "/static", "/search"]
    for line in requests:
        assert line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["route"]]
        assert "rnd-" not in line["route"]


def test_only_cors_preflights_skip_the_api_key(demo_bundle: Path, demo_index: tuple[Path, Path]) -> None:
    origin = "https://app.example"
    for cors in ({"CORS_ORIGINS": origin}, {}):
        client = make_client(make_settings(demo_bundle, demo_index[0], API_KEY=API_KEY, **cors))
        for path in ("/search", "/info", "/items/x/image"):
            assert_error(client.options(path), 401, "unauthorized")
            assert_error(client.options(path, headers={"origin": origin}), 401, "unauthorized")
        pre = client.options("/search", headers={"origin": origin, "access-control-request-method": "POST"})
        if cors:
            assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == origin
        else:  # no CORS configured: a preflight cannot succeed, so it gets no exemption either
            assert_error(pre, 401, "unauthorized")


# -- 12: query precision vs the index's precision ------------------------------------------------------------


def test_precision_mismatch_is_served_with_a_warning(
    demo_bundle: Path, demo_index: tuple[Path, Path], capsys: pytest.CaptureFixture[str], demo_client: Any
) -> None:
    capsys.readouterr()
    client = make_client(make_settings(demo_bundle, demo_index[0], PRECISION="int8"))
    lines = log_lines(capsys.readouterr().out)
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    warning = health.json()["warnings"][0]
    assert (
        warning["code"] == "precision_mismatch"
        and "int8" in warning["message"]
        and "fp32" in warning["message"]
    )
    info = client.get("/info").json()
    assert info["warnings"][0]["code"] == "precision_mismatch"
    assert info["index"]["precision"] == "fp32" and info["model"]["precision"] == "int8"
    assert client.post("/search", json={"text": "a red circle", "k": 3}).status_code == 200  # still served
    logged = [line for line in lines if line.get("event") == "precision_mismatch"]
    assert len(logged) == 1 and logged[0]["level"] == "WARNING"
    assert logged[0]["query_precision"] == "int8" and logged[0]["index_precision"] == "fp32"
    metric = logged[0]["_aws"]["CloudWatchMetrics"][0]
    assert metric["Metrics"] == [{"Name": "precision_mismatch", "Unit": "Count"}]
    assert metric["Dimensions"] == [["query_precision", "index_precision"]]
    # same precision: no warning
    assert "warnings" not in demo_client.get("/health").json()
    assert "warnings" not in demo_client.get("/info").json()


# -- 18: a terse public /health ------------------------------------------------------------------------------


def test_unhealthy_health_details_need_the_api_key(
    demo_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_path = tmp_path / "internal-bucket-name" / "indexes"
    client = make_client(make_settings(demo_bundle, secret_path, API_KEY=API_KEY))
    logs = capsys.readouterr().out
    public = client.get("/health")
    assert public.status_code == 503
    text = public.text
    assert "internal-bucket-name" not in text and str(tmp_path) not in text
    body = public.json()
    assert body["status"] == "unavailable" and body["problems"] == [
        {"component": "index", "code": body["error"]["code"]}
    ]
    assert body["reason"] == f"index: {body['error']['code']}"
    assert "logs" in body["error"]["message"]
    wrong = client.get("/health", headers={"x-api-key": "nope"})
    assert "internal-bucket-name" not in wrong.text
    private = client.get("/health", headers={"x-api-key": API_KEY})
    assert private.status_code == 503 and "internal-bucket-name" in private.json()["reason"]
    assert "message" in private.json()["problems"][0]
    assert "internal-bucket-name" in logs  # the operator still sees the details


def test_invalid_configuration_details_need_the_api_key(demo_bundle: Path, tmp_path: Path) -> None:
    from tests.handler.test_lambda import invoke, lambda_module, load_event

    with lambda_module(
        MODEL_URI=demo_bundle, CORS_ORIGINS="ftp://internal.example.corp", API_KEY=API_KEY, CACHE_DIR=tmp_path
    ) as module:
        status, _, body = invoke(module, load_event("health.json"))
        assert status == 503 and body["problems"] == [{"component": "config", "code": "config_error"}]
        assert "internal.example" not in json.dumps(body)
        event = load_event("health.json")
        event["headers"]["x-api-key"] = API_KEY
        status, _, body = invoke(module, event)
        assert status == 503 and "internal.example.corp" in body["reason"]
        status, _, body = invoke(module, load_event("search-text.json"))  # other routes: the key first
        assert status == 401 and body["error"]["code"] == "unauthorized"


# -- 19: result uris without server paths or bucket names ----------------------------------------------------


def test_results_do_not_reveal_the_collection_path(demo_client: Any, demo_index: tuple[Path, Path]) -> None:
    r = demo_client.post("/search", json={"text": "a red circle", "k": 20})
    assert r.status_code == 200
    assert str(demo_index[1]) not in r.text
    for result in r.json()["results"]:
        assert result["uri"] == result["id"] and (demo_index[1] / result["uri"]).is_file()
    r = demo_client.post("/search", json={"id": r.json()["results"][0]["id"], "k": 3})
    assert str(demo_index[1]) not in r.text


def test_public_uri_forms(tmp_path: Path) -> None:
    from handler.media import ImageLocator

    root = tmp_path / "photos"
    root.mkdir()
    local = ImageLocator(str(root), None)
    assert local.public_uri({"uri": str(root / "a" / "b.jpg")}) == "a/b.jpg"
    assert local.public_uri({"uri": (root / "c d.png").as_uri()}) == "c d.png"
    assert local.public_uri({"uri": "rel/x.png"}) == "rel/x.png"
    assert local.public_uri({"uri": "../escape.png"}) is None
    assert local.public_uri({"uri": str(tmp_path / "elsewhere.png")}) is None
    assert local.public_uri({"uri": "https://cdn.example/x.png"}) == "https://cdn.example/x.png"
    assert local.public_uri({"uri": "s3://internal-bucket/photos/x.png"}) is None
    assert local.public_uri({}) is None
    s3 = ImageLocator("s3://internal-bucket/photos/", None)
    assert s3.public_uri({"uri": "s3://internal-bucket/photos/2024/x.png"}) == "2024/x.png"
    assert s3.public_uri({"uri": "s3://other-bucket/photos/x.png"}) is None
    assert s3.public_uri({"uri": "/srv/x.png"}) is None
    jsonl = ImageLocator("s3://internal-bucket/lists/items.jsonl", None)
    assert jsonl.public_uri({"uri": "s3://internal-bucket/lists/img/x.png"}) == "img/x.png"


# -- 21: item images by sniffed raster type only -------------------------------------------------------------

SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script></svg>'


def test_item_images_are_sniffed_rasters_with_sandbox_headers(
    demo_bundle: Path, demo_embedder: Any, tmp_path: Path
) -> None:
    root = tmp_path / "collection"
    root.mkdir()
    Image.new("RGB", (8, 8), "red").save(root / "photo.png")
    Image.new("RGB", (8, 8), "blue").save(root / "misnamed.jpg", format="PNG")  # PNG bytes, .jpg name
    Image.new("RGB", (8, 8), "green").save(root / "later.svg", format="PNG")  # indexed as a PNG ...
    (root / "evil.png").write_bytes(SVG)  # an SVG named .png
    (root / "page.gif").write_bytes(b"<html><script>alert(1)</script></html>")
    rows = [
        {"id": name, "uri": str(root / name)}
        for name in ("photo.png", "misnamed.jpg", "later.svg", "evil.png", "page.gif")
    ]
    index_dir = tmp_path / "index"
    write_index(
        index_dir, demo_embedder, rows, demo_embedder.embed_texts([r["id"] for r in rows]), "v1", str(root)
    )
    client = make_client(make_settings(demo_bundle, index_dir))
    (root / "later.svg").write_bytes(SVG)  # ... and replaced by an SVG after indexing

    for item_id, media in (("photo.png", "image/png"), ("misnamed.jpg", "image/png")):
        for route in ("image", "thumbnail"):
            r = client.get(f"/items/{item_id}/{route}")
            assert r.status_code == 200, (item_id, route, r.text)
            if route == "image":
                assert r.headers["content-type"] == media
            assert r.headers["content-security-policy"] == "sandbox"
            assert r.headers["x-content-type-options"] == "nosniff"
        etag = client.get(f"/items/{item_id}/thumbnail").headers["etag"]
        r = client.get(f"/items/{item_id}/thumbnail", headers={"if-none-match": etag})
        assert r.status_code == 304 and r.headers["content-security-policy"] == "sandbox"
    for item_id in ("later.svg", "evil.png", "page.gif"):
        for route in ("image", "thumbnail"):
            r = client.get(f"/items/{item_id}/{route}")
            assert_error(r, 404, "unknown_id")
            assert "svg" not in r.headers["content-type"] and "html" not in r.headers["content-type"]
    results = {x["id"]: x for x in client.post("/search", json={"text": "x", "k": 5}).json()["results"]}
    assert results["evil.png"]["image_url"] is None and results["page.gif"]["image_url"] is None
    assert results["photo.png"]["image_url"] == "/items/photo.png/image"


def test_sniff_raster() -> None:
    import io

    from handler.media import sniff_raster

    for fmt, media in (
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("GIF", "image/gif"),
        ("WEBP", "image/webp"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
    ):
        buf = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buf, format=fmt)
        assert sniff_raster(buf.getvalue()[:16]) == media, fmt
    for junk in (SVG, b"<?xml version='1.0'?><svg/>", b"<!DOCTYPE html>", b"", b"BM", b"%PDF-1.7"):
        assert sniff_raster(junk[:16]) is None


# -- 24: Swagger UI from the package -------------------------------------------------------------------------


def test_docs_page_uses_only_packaged_assets(demo_client: Any) -> None:
    import re

    page = demo_client.get("/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text and "https://" not in page.text and "http://" not in page.text
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r"url: '([^']+)'", page.text)
    assert urls and all(u.startswith("/") for u in urls), urls
    for url in urls:
        r = demo_client.get(url)
        assert r.status_code == 200, url
    js = demo_client.get("/static/swagger-ui/swagger-ui-bundle.js")
    assert js.headers["content-type"].startswith("text/javascript") and b"SwaggerUIBundle" in js.content
    assert demo_client.get("/redoc").status_code == 404  # CDN-only page: not offered


def test_text_budget_per_request(demo_client: Any) -> None:
    """64 texts at the per-text cap would be ~1.3M characters of BPE in one request: capped in total
    (issue 11 #1)."""
    from handler.limits import MAX_REQUEST_TEXT_CHARS, MAX_TEXT_CHARS

    n = MAX_REQUEST_TEXT_CHARS // MAX_TEXT_CHARS
    r = demo_client.post("/embeddings", json={"text": ["word " * (MAX_TEXT_CHARS // 5)] * (n + 1)})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_much_text", r.text
    r = demo_client.post("/embeddings", json={"text": ["a cat"] * 64})
    assert r.status_code == 200 and len(r.json()["text_embeddings"]) == 64
