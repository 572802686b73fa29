"""Issue 11 #7: every response from the Lambda entry is JSON with the error shape - lone surrogates in the
path of API Gateway v1 / v2 / Function URL events, and failures outside the app's error handlers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.handler.test_lambda import demo_lambda, invoke, load_event  # noqa: F401  (fixture)

SURROGATE_PATHS = [
    "/he\ud800alth",
    "/items/\udc00/image",
    "/items/a\ud83d/thumbnail",
    "/\udfff",
    "/search\ud800",
    "/static/\ud800.js",
]


def with_path(name: str, path: str) -> dict[str, Any]:
    event = load_event(name)
    if "rawPath" in event:  # HTTP API v2 / Function URL
        event["rawPath"] = path
        event["requestContext"]["http"]["path"] = path
    else:  # REST API v1
        event["path"] = path
        event["requestContext"]["path"] = "/prod" + path
    return event


@pytest.mark.parametrize(
    "name",
    [
        "health.json",
        "health-v1.json",
        "health-function-url.json",
        "search-text.json",
        "search-text-v1.json",
        "search-text-function-url.json",
    ],
)
@pytest.mark.parametrize(
    "path", SURROGATE_PATHS, ids=lambda p: p.encode("utf-8", "backslashreplace").decode()
)
def test_surrogate_paths_get_json_errors(
    demo_lambda: Any,
    capsys: pytest.CaptureFixture[str],  # noqa: F811
    name: str,
    path: str,
) -> None:
    status, headers, body = invoke(demo_lambda, with_path(name, path))
    assert headers["content-type"].startswith("application/json"), (status, body)
    assert 400 <= status < 500, (status, body)
    assert set(body) == {"error"} and isinstance(body["error"]["code"], str)
    captured = capsys.readouterr()
    assert "Logging error" not in captured.err and "UnicodeEncodeError" not in captured.out + captured.err
    lines = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    request = [line for line in lines if line.get("event") == "request"]
    assert request and request[-1]["status"] == status


def test_failures_outside_the_app_are_json(capsys: pytest.CaptureFixture[str]) -> None:
    from handler.lambda_adapter import SafeMangum

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def half(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [[b"content-type", b"text/plain"]]}
        )
        raise RuntimeError("after the start")

    for app in (broken, half):
        out = SafeMangum(app)(load_event("health.json"), None)
        assert out["statusCode"] == 500 and out["headers"]["content-type"] == "application/json"
        assert json.loads(out["body"]) == {"error": {"code": "internal_error", "message": "internal error"}}
    assert "lambda_error" in capsys.readouterr().out


def test_surrogate_path_with_the_lambda_log_setup(
    demo_bundle: Any, demo_index: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """On Lambda the mangum logger writes JSON lines too (its "GET <path> 404" line raised before)."""
    import logging

    from tests.handler.test_lambda import lambda_module

    saved = {
        name: (lg.handlers[:], lg.level, lg.propagate)
        for name, lg in ((n, logging.getLogger(n)) for n in ("handler", "mangum"))
    }
    try:
        with lambda_module(
            MODEL_URI=demo_bundle,
            INDEX_URI=demo_index[0],
            CACHE_DIR=tmp_path,
            AWS_LAMBDA_FUNCTION_NAME="clip-search-test",
        ) as module:
            capsys.readouterr()
            for name in ("health.json", "health-v1.json", "health-function-url.json"):
                status, _, body = invoke(module, with_path(name, "/he\ud800alth"))
                assert status == 404 and body["error"]["code"] == "not_found"
            captured = capsys.readouterr()
    finally:
        for name, (handlers, level, propagate) in saved.items():
            lg = logging.getLogger(name)
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate
    assert "Logging error" not in captured.err, captured.err[-2000:]
    mangum = [json.loads(x) for x in captured.out.splitlines() if '"logger": "mangum' in x]
    assert len(mangum) == 3 and all(m["message"].endswith(" 404") for m in mangum)


def test_safe_mangum_uses_mangums_extension_points() -> None:
    """SafeMangum does not re-implement Mangum.__call__: its event handlers are Mangum's own (subclassed,
    same inference order, via custom_handlers), a caller's custom handlers still apply, and __call__
    delegates to Mangum's."""
    from mangum import Mangum
    from mangum.adapter import HANDLERS

    from handler.lambda_adapter import SAFE_HANDLERS, SafeMangum

    assert [cls.__mro__[1] for cls in SAFE_HANDLERS] == HANDLERS
    calls: list[str] = []

    class Spy(Mangum):
        def __call__(self, event: Any, context: Any) -> dict[str, Any]:
            calls.append("mangum")
            return super().__call__(event, context)

    class Safe(SafeMangum, Spy):
        pass

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [[b"content-type", b"application/json"]],
            }
        )
        await send({"type": "http.response.body", "body": b'{"ok": true}'})

    out = Safe(app)(load_event("health.json"), None)
    assert out["statusCode"] == 200 and json.loads(out["body"]) == {"ok": True} and calls == ["mangum"]

    class Custom:  # a caller's handler for a custom event shape keeps working
        @classmethod
        def infer(cls, event: Any, context: Any, config: Any) -> bool:
            return "custom" in event

        def __init__(self, event: Any, context: Any, config: Any) -> None:
            self.event = event

        scope = property(
            lambda self: {
                "type": "http",
                "method": "GET",
                "path": "/",
                "headers": [],
                "query_string": b"",
                "http_version": "1.1",
                "scheme": "https",
                "server": None,
                "client": None,
                "root_path": "",
                "raw_path": None,
                "aws.event": self.event,
                "aws.context": None,
            }
        )
        body = b""

        def __call__(self, response: Any) -> dict[str, Any]:
            return {"custom": response["status"]}

    assert SafeMangum(app, custom_handlers=[Custom])({"custom": 1}, None) == {"custom": 200}
    bad = SafeMangum(app)({"custom": 1}, None)
    assert bad["statusCode"] == 400 and json.loads(bad["body"])["error"]["code"] == "bad_event"
