"""events.builders: the one place that builds API Gateway events (sample events, demo, bench,
deploy tests)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import events.builders as builders

EVENTS = Path(__file__).resolve().parents[2] / "events"


def test_every_caller_uses_the_builders() -> None:
    import bench.coldstart.processes as coldstart
    import demo.run
    import events.generate
    from tests.deploy import conftest

    assert events.generate.http_api is builders.http_api and events.generate.multipart is builders.multipart
    assert demo.run.http_api is builders.http_api and coldstart.http_api is builders.http_api
    assert conftest.http_api is builders.http_api
    demo_event = demo.run.http_api_event("POST", "/search", {"text": "x"})
    assert demo_event["headers"]["user-agent"] == "make-demo"
    assert json.loads(demo_event["body"]) == {"text": "x"}
    assert coldstart.api_event({"k": 1})["requestContext"]["http"]["method"] == "POST"


def test_http_api_matches_the_committed_samples() -> None:
    """The builder still writes what events/*.json hold (those without the demo image's bytes)."""
    text = json.dumps({"text": "a red circle", "k": 5})
    assert builders.http_api("POST", "/search", text, "application/json") == json.loads(
        (EVENTS / "search-text.json").read_text()
    )
    assert builders.rest_api("GET", "/health") == json.loads((EVENTS / "health-v1.json").read_text())
    assert builders.function_url("GET", "/health") == json.loads(
        (EVENTS / "health-function-url.json").read_text()
    )


def test_binary_bodies_and_extra_headers() -> None:
    body = builders.multipart({"k": "3"}, {"image": ("q.png", "image/png", b"\x89PNG")}, boundary="b0")
    assert body.startswith(b"--b0\r\n") and body.endswith(b"--b0--\r\n")
    event = builders.http_api(
        "POST", "/search", body, "multipart/form-data; boundary=b0", headers={"x-api-key": "k"}
    )
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == body
    assert event["headers"]["x-api-key"] == "k" and event["headers"]["content-length"] == str(len(body))
