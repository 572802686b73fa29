"""handler.lambda_function: every sample event through ``lambda_handler`` (API Gateway REST v1, HTTP API
v2, Function URL), unknown and malformed events, start-up failures that still import, cold-start metrics."""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handler.config import ENV_VARS

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"


@contextlib.contextmanager
def lambda_module(**env: Any) -> Iterator[Any]:
    """Import handler.lambda_function afresh with exactly these service variables set."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ENV_VARS:
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, str(value))
        sys.modules.pop("handler.lambda_function", None)
        try:
            yield importlib.import_module("handler.lambda_function")
        finally:
            sys.modules.pop("handler.lambda_function", None)


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def invoke(module: Any, event: Any) -> tuple[int, dict[str, str], Any]:
    """(status, lower-cased headers, parsed body: JSON, text or bytes)."""
    out = module.lambda_handler(event, None)
    assert isinstance(out, dict) and isinstance(out["statusCode"], int), out
    headers = {k.lower(): v for k, v in (out.get("headers") or {}).items()}
    raw = out.get("body") or ""
    data = base64.b64decode(raw) if out.get("isBase64Encoded") else raw.encode()
    ctype = headers.get("content-type", "")
    if ctype.startswith("application/json"):
        return out["statusCode"], headers, json.loads(data)
    if ctype.startswith("text/"):
        return out["statusCode"], headers, data.decode()
    return out["statusCode"], headers, data


@pytest.fixture(scope="module")
def demo_lambda(
    demo_bundle: Path, demo_index: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    with lambda_module(
        MODEL_URI=demo_bundle,
        INDEX_URI=demo_index[0],
        INDEX_REFRESH_SECONDS=0,
        CACHE_DIR=tmp_path_factory.mktemp("cache"),
        ORT_THREADS=2,
    ) as module:
        assert module.state.healthy(), module.state.problems()
        yield module


EXPECTED = {
    "health.json": 200,
    "health-v1.json": 200,
    "health-function-url.json": 200,
    "info.json": 200,
    "page.json": 200,
    "page-v1.json": 200,
    "docs.json": 200,
    "openapi.json": 200,
    "search-text.json": 200,
    "search-text-paged.json": 200,
    "search-image.json": 200,
    "search-image-multipart.json": 200,
    "search-text-multipart.json": 200,
    "search-id.json": 200,
    "embeddings.json": 200,
    "item-image.json": 200,
    "item-thumbnail.json": 200,
    "search-bad-json.json": 400,
    "search-text-v1.json": 200,
    "search-image-multipart-v1.json": 200,
    "embeddings-v1.json": 200,
    "search-text-function-url.json": 200,
    "search-image-function-url.json": 200,
    "embeddings-function-url.json": 200,
    "unknown-event.json": 400,
}


def test_events_directory_is_complete() -> None:
    assert sorted(p.name for p in EVENTS.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_sample_event(demo_lambda: Any, name: str) -> None:
    status, headers, body = invoke(demo_lambda, load_event(name))
    assert status == EXPECTED[name], (name, body)
    if status >= 400:
        assert set(body) == {"error"} and body["error"]["code"] in ("invalid_json", "bad_event")
        return
    if name.startswith("search-"):
        assert len(body["results"]) == 5 and body["index_version"] == "v0001"
        stage = "/prod" if name.endswith("-v1.json") else ""
        assert all(r["image_url"].startswith(f"{stage}/items/") for r in body["results"])
        if "image" in name:
            assert body["query"]["type"] == "image" and body["query"]["width"] == 64
    if name.startswith("embeddings"):
        vectors = body.get("text_embeddings", []) + body.get("image_embeddings", [])
        assert vectors and all(len(v) == 128 for v in vectors)
    if name.startswith("page"):
        assert headers["content-type"].startswith("text/html")
        assert f'<base href="{"/prod" if name.endswith("-v1.json") else ""}/">' in body
    if name.startswith("item-"):
        assert headers["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8"


def test_search_results_match_between_event_shapes(demo_lambda: Any, demo_client: Any) -> None:
    want = demo_client.post("/search", json={"text": "a red circle", "k": 5}).json()
    for name in (
        "search-text.json",
        "search-text-v1.json",
        "search-text-function-url.json",
        "search-text-multipart.json",
    ):
        _, _, body = invoke(demo_lambda, load_event(name))
        assert [r["id"] for r in body["results"]] == [r["id"] for r in want["results"]], name
    image = [
        invoke(demo_lambda, load_event(n))[2]
        for n in (
            "search-image.json",
            "search-image-multipart.json",
            "search-image-multipart-v1.json",
            "search-image-function-url.json",
        )
    ]
    assert len({tuple(r["id"] for r in b["results"]) for b in image}) == 1


def _v2(
    method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None, b64: bool = False
) -> dict[str, Any]:
    event = load_event("health.json")
    event["rawPath"] = path
    event["requestContext"]["http"].update(method=method, path=path)
    event["headers"] = {"host": "x.example", **(headers or {})}
    if body is not None:
        event["body"] = body
    event["isBase64Encoded"] = b64
    return event


def test_errors_and_routes_through_lambda(demo_lambda: Any) -> None:
    status, _, body = invoke(demo_lambda, _v2("GET", "/no/such/route"))
    assert status == 404 and body["error"]["code"] == "not_found"
    status, headers, body = invoke(demo_lambda, _v2("GET", "/search"))
    assert status == 405 and body["error"]["code"] == "method_not_allowed" and headers["allow"] == "POST"
    status, _, body = invoke(
        demo_lambda, _v2("POST", "/search", '{"text": ""}', {"content-type": "application/json"})
    )
    assert status == 400 and body["error"]["code"] == "invalid_text"
    status, _, body = invoke(demo_lambda, _v2("POST", "/search", "a", {"content-type": "text/plain"}))
    assert status == 415
    status, _, body = invoke(demo_lambda, _v2("GET", "/items/..%2F..%2Fetc%2Fpasswd/image"))
    assert status == 404
    # a base64 JSON body (API Gateway binary media types = */*)
    raw = base64.b64encode(json.dumps({"text": "a red circle", "k": 2}).encode()).decode()
    status, _, body = invoke(
        demo_lambda, _v2("POST", "/search", raw, {"content-type": "application/json"}, b64=True)
    )
    assert status == 200 and len(body["results"]) == 2


@pytest.mark.parametrize(
    "event",
    [
        None,
        "GET /health",
        [],
        42,
        {},
        {"source": "aws.events", "detail-type": "Scheduled Event"},
        {"Records": [{"eventSource": "aws:s3"}]},
        {"version": "2.0", "requestContext": {}},
        {"version": "2.0", "requestContext": {"http": {"method": "GET"}}},
        {
            "version": "2.0",
            "requestContext": {"http": {"method": None, "path": "/health", "sourceIp": "1.2.3.4"}},
        },
        {"resource": "/", "requestContext": {}},
        {
            "resource": "/",
            "requestContext": {},
            "httpMethod": "GET",
            "path": "/health",
            "headers": {"a": None},
        },
        {"resource": "/", "requestContext": {}, "httpMethod": "GET", "path": "/health", "headers": ["x"]},
        {
            "version": "2.0",
            "requestContext": {"http": {"method": "POST", "path": "/search", "sourceIp": "1"}},
            "headers": {"content-type": "application/json"},
            "body": "abc",
            "isBase64Encoded": True,
        },
    ],
    ids=lambda e: repr(e)[:40],
)
def test_unknown_or_malformed_events_get_400(demo_lambda: Any, event: Any) -> None:
    out = demo_lambda.lambda_handler(event, None)
    assert out["statusCode"] == 400, out
    assert json.loads(out["body"])["error"]["code"] == "bad_event"


def test_stage_prefixes(demo_lambda: Any) -> None:
    # HTTP API on a named stage: the path carries the stage
    event = _v2(
        "POST",
        "/beta/search",
        json.dumps({"text": "a red circle", "k": 1}),
        {"content-type": "application/json"},
    )
    event["requestContext"]["stage"] = "beta"
    status, _, body = invoke(demo_lambda, event)
    assert status == 200 and body["results"][0]["image_url"].startswith("/beta/items/")
    event = _v2("GET", "/beta")
    event["requestContext"]["stage"] = "beta"
    status, _, html = invoke(demo_lambda, event)
    assert status == 200 and '<base href="/beta/">' in html
    # REST API behind a custom domain (requestContext.path has no stage prefix): no root path
    event = load_event("search-text-v1.json")
    event["requestContext"]["path"] = "/search"
    status, _, body = invoke(demo_lambda, event)
    assert status == 200 and body["results"][0]["image_url"].startswith("/items/")


def test_api_key_and_cors_through_lambda(
    demo_bundle: Path, demo_index: tuple[Path, Path], tmp_path: Path
) -> None:
    with lambda_module(
        MODEL_URI=demo_bundle,
        INDEX_URI=demo_index[0],
        API_KEY="k3y-for-tests",
        CORS_ORIGINS="https://app.example",
        CACHE_DIR=tmp_path,
    ) as module:
        event = load_event("search-text.json")
        event["headers"]["origin"] = "https://app.example"
        status, headers, body = invoke(module, event)
        assert status == 401 and body["error"]["code"] == "unauthorized"
        assert headers["access-control-allow-origin"] == "https://app.example"
        event["headers"]["x-api-key"] = "k3y-for-tests"
        status, headers, body = invoke(module, event)
        assert status == 200 and headers["access-control-allow-origin"] == "https://app.example"
        v1 = load_event("search-text-v1.json")
        v1["headers"]["X-Api-Key"] = "k3y-for-tests"
        v1["multiValueHeaders"]["X-Api-Key"] = ["k3y-for-tests"]
        assert invoke(module, v1)[0] == 200
        assert invoke(module, load_event("health.json"))[0] == 200
        assert invoke(module, load_event("page.json"))[0] == 200
        assert invoke(module, load_event("info.json"))[0] == 401


def test_cold_start_metrics_and_request_logs(
    demo_bundle: Path, demo_index: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    with lambda_module(MODEL_URI=demo_bundle, INDEX_URI=demo_index[0], CACHE_DIR=tmp_path) as module:
        invoke(module, load_event("search-text.json"))
        invoke(module, load_event("search-text.json"))
        invoke(module, load_event("unknown-event.json"))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    cold = [line for line in lines if line.get("event") == "cold_start"]
    assert len(cold) == 1
    metrics = {m["Name"]: m["Unit"] for m in cold[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert metrics["cold_start"] == "Count" and metrics["init_ms"] == "Milliseconds"
    assert {"model_load_ms", "index_load_ms"} <= set(metrics)
    assert cold[0]["cold_start"] == 1 and cold[0]["init_ms"] > 0 and cold[0]["healthy"] is True
    requests = [line for line in lines if line.get("event") == "request"]
    assert [r["cold_start"] for r in requests] == [True, False]
    assert all(r["route"] == "/search" and r["status"] == 200 and r["query_type"] == "text" for r in requests)
    assert all("a red circle" not in json.dumps(r) for r in requests)
    assert any(line.get("event") == "bad_event" for line in lines)


def test_imports_with_bad_configuration(tmp_path: Path, demo_bundle: Path) -> None:
    with lambda_module() as module:  # MODEL_URI unset
        status, _, body = invoke(module, load_event("health.json"))
        assert status == 503 and body["problems"][0]["component"] == "config"
        assert "MODEL_URI" in body["reason"]
        status, _, body = invoke(module, load_event("search-text.json"))
        assert status == 503 and body["error"]["code"] == "model_unavailable"
    with lambda_module(MODEL_URI=demo_bundle, PRECISION="fp64") as module:
        status, _, body = invoke(module, load_event("health.json"))
        assert status == 503 and "PRECISION='fp64'" in body["reason"]
    with lambda_module(MODEL_URI=tmp_path / "missing", CACHE_DIR=tmp_path) as module:
        status, _, body = invoke(module, load_event("health.json"))
        assert status == 503 and body["problems"][0]["component"] == "model"


def test_fingerprint_mismatch_is_refused(
    demo_bundle: Path, demo_embedder: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from index_builder.publish import publish
    from index_builder.version_write import write_version
    from tests.conftest import normalized_vectors

    index_dir = tmp_path / "index"
    m = write_version(
        str(index_dir),
        "other-model",
        vectors=normalized_vectors(4, 128),
        items=[{"id": i} for i in range(4)],
        manifest_fields={"model_fingerprint": "sha256:" + "0" * 64},
    )
    publish(str(index_dir), "other-model", m)
    capsys.readouterr()
    with lambda_module(MODEL_URI=demo_bundle, INDEX_URI=index_dir, CACHE_DIR=tmp_path) as module:
        status, _, body = invoke(module, load_event("health.json"))
        assert status == 503 and body["error"]["code"] == "model_mismatch"
        assert "rebuild the index" in body["reason"]
        status, _, body = invoke(module, load_event("search-text.json"))
        assert status == 503 and body["error"]["code"] == "index_unavailable"
        assert invoke(module, load_event("embeddings.json"))[0] == 200  # the model itself is fine
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    failed = [x for x in lines if x.get("event") == "index_load_failed"]
    assert failed and failed[0]["code"] == "model_mismatch" and failed[0]["level"] == "ERROR"
    assert demo_embedder.model_fingerprint in failed[0]["message"]


def test_lambda_function_imports_no_training_stack(
    demo_bundle: Path, demo_index: tuple[Path, Path], tmp_path: Path
) -> None:
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "import handler.lambda_function as f\n"
        "dt = time.perf_counter() - t\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'torchvision', 'open_clip', 'export', 'index_builder', 'boto3'})\n"
        "assert f.state.healthy(), f.state.problems()\n"
        "print(bad, round(dt * 1000), flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(MODEL_URI=str(demo_bundle), INDEX_URI=str(demo_index[0]), CACHE_DIR=str(tmp_path))
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr[-2000:]
    bad, _ = res.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert bad == "[]", res.stdout  # local artifacts: not even boto3


def test_cold_start_creates_the_visual_session_in_the_background(
    demo_bundle: Path, demo_index: tuple[Path, Path], tmp_path: Path
) -> None:
    """The text tower is ready at import; the visual session follows in a thread without any image query,
    so the first image query does not load it on the request path."""
    with lambda_module(MODEL_URI=demo_bundle, INDEX_URI=demo_index[0], CACHE_DIR=tmp_path) as module:
        emb = module.state.embedder
        assert emb.visual_ready.wait(60) and emb.visual_loaded
        loaded_in = emb.timings["visual_load_s"]
        status, _, body = invoke(module, load_event("search-image.json"))
        assert status == 200 and body["results"]
        assert emb.timings["visual_load_s"] == loaded_in  # not loaded again by the request


def test_model_verify_off_skips_the_checksums_of_a_local_bundle(demo_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(demo_bundle, tmp_path / "bundle"))
    manifest = json.loads((copy / "manifest.json").read_text())
    for entry in manifest["files"].values():
        entry["sha256"] = "0" * 64  # what a corrupt file would look like to the check
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with lambda_module(MODEL_URI=copy, CACHE_DIR=tmp_path) as module:
        status, _, body = invoke(module, load_event("health.json"))
        assert status == 503 and "sha256" in body["reason"]
    with lambda_module(MODEL_URI=copy, CACHE_DIR=tmp_path, MODEL_VERIFY="off") as module:
        assert invoke(module, load_event("health.json"))[0] == 200
        assert invoke(module, load_event("embeddings.json"))[0] == 200
