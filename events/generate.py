"""Write the sample Lambda events of events/*.json (run from the repository root)::

    python events/generate.py

HTTP API (payload 2.0) events follow ``sam local generate-event apigateway http-api-proxy``; REST API
events (``*-v1.json``) follow ``sam local generate-event apigateway aws-proxy`` (stage ``prod``, invoked on
the execute-api URL); Function URL events (``*-function-url.json``) are payload 2.0 from a
``*.lambda-url.<region>.on.aws`` domain. Image events embed a small demo image (a blue square).

Invoke one locally::

    MODEL_URI=artifacts/demo/bundle INDEX_URI=artifacts/demo/index python -c \
      "import json; from handler.lambda_function import lambda_handler; \
       print(lambda_handler(json.load(open('events/search-text.json')), None))"

``ITEM_ID`` in search-id.json / item-*.json is a placeholder: put an id of your index there.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script: the repository root holds events/ and demo/
ITEM_ID = "img_00000.jpg"

from events.builders import BOUNDARY, function_url, http_api, multipart, rest_api  # noqa: E402


def demo_png() -> bytes:
    import numpy as np

    from demo.shapes import render

    buf = io.BytesIO()
    render("blue", "square", np.random.default_rng(5), 64).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def main() -> int:
    png = demo_png()
    png_b64 = base64.b64encode(png).decode()
    json_ct = "application/json"
    mp_ct = f"multipart/form-data; boundary={BOUNDARY}"
    search_text = json.dumps({"text": "a red circle", "k": 5})
    events: dict[str, dict[str, Any]] = {
        "health.json": http_api("GET", "/health"),
        "info.json": http_api("GET", "/info"),
        "page.json": http_api("GET", "/"),
        "docs.json": http_api("GET", "/docs"),
        "openapi.json": http_api("GET", "/openapi.json"),
        "search-text.json": http_api("POST", "/search", search_text, json_ct),
        "search-text-paged.json": http_api(
            "POST",
            "/search",
            json.dumps({"text": "a red circle", "k": 5, "offset": 5, "min_score": 0.0}),
            json_ct,
        ),
        "search-image.json": http_api(
            "POST", "/search", json.dumps({"image": "data:image/png;base64," + png_b64, "k": 5}), json_ct
        ),
        "search-image-multipart.json": http_api(
            "POST", "/search", multipart({"k": "5"}, {"image": ("blue-square.png", "image/png", png)}), mp_ct
        ),
        "search-text-multipart.json": http_api(
            "POST", "/search", multipart({"text": "a red circle", "k": "5"}, {}), mp_ct
        ),
        "search-id.json": http_api("POST", "/search", json.dumps({"id": ITEM_ID, "k": 5}), json_ct),
        "embeddings.json": http_api(
            "POST",
            "/embeddings",
            json.dumps({"text": ["a red circle", "a blue square"], "image": png_b64}),
            json_ct,
        ),
        "item-image.json": http_api("GET", f"/items/{ITEM_ID}/image"),
        "item-thumbnail.json": http_api("GET", f"/items/{ITEM_ID}/thumbnail"),
        "search-bad-json.json": http_api("POST", "/search", '{"text": "a red circle",', json_ct),
        "search-text-v1.json": rest_api("POST", "/search", search_text, json_ct),
        "search-image-multipart-v1.json": rest_api(
            "POST", "/search", multipart({"k": "5"}, {"image": ("blue-square.png", "image/png", png)}), mp_ct
        ),
        "embeddings-v1.json": rest_api("POST", "/embeddings", json.dumps({"text": "a red circle"}), json_ct),
        "health-v1.json": rest_api("GET", "/health"),
        "page-v1.json": rest_api("GET", "/"),
        "search-text-function-url.json": function_url("POST", "/search", search_text, json_ct),
        "search-image-function-url.json": function_url(
            "POST", "/search", multipart({"k": "5"}, {"image": ("blue-square.png", "image/png", png)}), mp_ct
        ),
        "embeddings-function-url.json": function_url(
            "POST", "/embeddings", json.dumps({"image": [png_b64]}), json_ct
        ),
        "health-function-url.json": function_url("GET", "/health"),
        "unknown-event.json": {  # an EventBridge scheduled event: not an HTTP request -> 400
            "version": "0",
            "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": "2026-03-10T13:40:52Z",
            "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/warmer"],
            "detail": {},
        },
    }
    for name, event in events.items():
        (HERE / name).write_text(json.dumps(event, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(events)} events to {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
