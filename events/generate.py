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
ITEM_ID = "img_00000.jpg"
BOUNDARY = "----clipsearchboundary7MA4YWxkTrZu0gW"


def demo_png() -> bytes:
    sys.path.insert(0, str(HERE.parent))
    import numpy as np

    from demo.shapes import render

    buf = io.BytesIO()
    render("blue", "square", np.random.default_rng(5), 64).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, str, bytes]]) -> bytes:
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, ctype, data) in files.items():
        out.write(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  f"Content-Type: {ctype}\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


def _body(body: bytes | str | None) -> tuple[str | None, bool]:
    if body is None:
        return None, False
    if isinstance(body, bytes):
        return base64.b64encode(body).decode(), True
    return body, False


def http_api(method: str, path: str, body: bytes | str | None = None, content_type: str | None = None,
             query: str = "", domain: str = "abcdef1234.execute-api.us-east-1.amazonaws.com") -> dict[str, Any]:
    """An HTTP API (payload format 2.0) event, as ``sam local generate-event apigateway http-api-proxy``."""
    headers = {"accept": "application/json", "host": domain, "user-agent": "curl/8.5.0",
               "x-amzn-trace-id": "Root=1-5e6722a7-cc56xmpl46db7ae02d4da47e", "x-forwarded-for": "205.255.255.176",
               "x-forwarded-port": "443", "x-forwarded-proto": "https"}
    if content_type:
        headers["content-type"] = content_type
    text, b64 = _body(body)
    if text is not None:
        headers["content-length"] = str(len(base64.b64decode(text)) if b64 else len(text.encode()))
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": domain.split(".")[0],
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "205.255.255.176",
                     "userAgent": "curl/8.5.0"},
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "10/Mar/2026:13:40:52 +0000",
            "timeEpoch": 1773150052000,
        },
        "isBase64Encoded": b64,
    }
    if query:
        event["queryStringParameters"] = dict(p.split("=", 1) for p in query.split("&"))
    if text is not None:
        event["body"] = text
    return event


def function_url(method: str, path: str, body: bytes | str | None = None, content_type: str | None = None,
                 query: str = "") -> dict[str, Any]:
    """A Lambda Function URL event (payload 2.0, no API Gateway)."""
    event = http_api(method, path, body, content_type, query,
                     domain="a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6.lambda-url.us-east-1.on.aws")
    ctx = event["requestContext"]
    ctx["apiId"] = ctx["domainPrefix"]
    ctx["authorizer"] = {"iam": None}
    event.pop("routeKey")
    return event


def rest_api(method: str, path: str, body: bytes | str | None = None, content_type: str | None = None,
             stage: str = "prod") -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event, as ``sam local generate-event apigateway aws-proxy``,
    invoked on the execute-api URL ``https://<api>.execute-api.<region>.amazonaws.com/<stage>/...``."""
    domain = "1234567890.execute-api.us-east-1.amazonaws.com"
    headers = {"Accept": "application/json", "Host": domain, "User-Agent": "curl/8.5.0",
               "X-Forwarded-For": "205.255.255.176", "X-Forwarded-Port": "443", "X-Forwarded-Proto": "https"}
    if content_type:
        headers["Content-Type"] = content_type
    text, b64 = _body(body)
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "123456",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "extendedRequestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "requestTime": "10/Mar/2026:13:40:52 +0000",
            "path": f"/{stage}{path}",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": domain.split(".")[0],
            "requestTimeEpoch": 1773150052000,
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "205.255.255.176", "userAgent": "curl/8.5.0", "accountId": None,
                         "caller": None, "user": None},
            "domainName": domain,
            "apiId": domain.split(".")[0],
        },
        "body": text,
        "isBase64Encoded": b64,
    }


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
        "search-text-paged.json": http_api("POST", "/search", json.dumps(
            {"text": "a red circle", "k": 5, "offset": 5, "min_score": 0.0}), json_ct),
        "search-image.json": http_api("POST", "/search", json.dumps(
            {"image": "data:image/png;base64," + png_b64, "k": 5}), json_ct),
        "search-image-multipart.json": http_api("POST", "/search", multipart(
            {"k": "5"}, {"image": ("blue-square.png", "image/png", png)}), mp_ct),
        "search-text-multipart.json": http_api("POST", "/search", multipart({"text": "a red circle", "k": "5"}, {}),
                                               mp_ct),
        "search-id.json": http_api("POST", "/search", json.dumps({"id": ITEM_ID, "k": 5}), json_ct),
        "embeddings.json": http_api("POST", "/embeddings", json.dumps(
            {"text": ["a red circle", "a blue square"], "image": png_b64}), json_ct),
        "item-image.json": http_api("GET", f"/items/{ITEM_ID}/image"),
        "item-thumbnail.json": http_api("GET", f"/items/{ITEM_ID}/thumbnail"),
        "search-bad-json.json": http_api("POST", "/search", '{"text": "a red circle",', json_ct),
        "search-text-v1.json": rest_api("POST", "/search", search_text, json_ct),
        "search-image-multipart-v1.json": rest_api("POST", "/search", multipart(
            {"k": "5"}, {"image": ("blue-square.png", "image/png", png)}), mp_ct),
        "embeddings-v1.json": rest_api("POST", "/embeddings", json.dumps({"text": "a red circle"}), json_ct),
        "health-v1.json": rest_api("GET", "/health"),
        "page-v1.json": rest_api("GET", "/"),
        "search-text-function-url.json": function_url("POST", "/search", search_text, json_ct),
        "search-image-function-url.json": function_url("POST", "/search", multipart(
            {"k": "5"}, {"image": ("blue-square.png", "image/png", png)}), mp_ct),
        "embeddings-function-url.json": function_url("POST", "/embeddings", json.dumps({"image": [png_b64]}),
                                                     json_ct),
        "health-function-url.json": function_url("GET", "/health"),
        "unknown-event.json": {  # an EventBridge scheduled event: not an HTTP request -> 400
            "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2026-03-10T13:40:52Z",
            "region": "us-east-1", "resources": ["arn:aws:events:us-east-1:123456789012:rule/warmer"], "detail": {}},
    }
    for name, event in events.items():
        (HERE / name).write_text(json.dumps(event, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(events)} events to {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
