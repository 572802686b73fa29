"""Lambda events for the function, one builder per event source: API Gateway HTTP API (payload 2.0),
Function URL and REST API (v1) proxy events, and multipart bodies. Used by events/generate.py (the sample
events), demo/run.py, bench/coldstart/ and the deploy tests, so every event has one shape."""

from __future__ import annotations

import base64
import io
from typing import Any

__all__ = ["BOUNDARY", "function_url", "http_api", "multipart", "rest_api"]

BOUNDARY = "----clipsearchboundary7MA4YWxkTrZu0gW"


def multipart(
    fields: dict[str, str], files: dict[str, tuple[str, str, bytes]], boundary: str = BOUNDARY
) -> bytes:
    """A multipart/form-data body: ``files`` maps a field to ``(filename, content type, bytes)``."""
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for name, (filename, ctype, data) in files.items():
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n".encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


def _body(body: bytes | str | None) -> tuple[str | None, bool]:
    if body is None:
        return None, False
    if isinstance(body, bytes):
        return base64.b64encode(body).decode(), True
    return body, False


def http_api(
    method: str,
    path: str,
    body: bytes | str | None = None,
    content_type: str | None = None,
    query: str = "",
    domain: str = "abcdef1234.execute-api.us-east-1.amazonaws.com",
    *,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An HTTP API (payload format 2.0) event, as ``sam local generate-event apigateway http-api-proxy``.
    Binary bodies (bytes) are base64-encoded, as API Gateway does; ``headers`` are added last."""
    extra = headers or {}
    headers = {
        "accept": "application/json",
        "host": domain,
        "user-agent": "curl/8.5.0",
        "x-amzn-trace-id": "Root=1-5e6722a7-cc56xmpl46db7ae02d4da47e",
        "x-forwarded-for": "205.255.255.176",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    if content_type:
        headers["content-type"] = content_type
    headers.update(extra)
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
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "205.255.255.176",
                "userAgent": "curl/8.5.0",
            },
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


def function_url(
    method: str, path: str, body: bytes | str | None = None, content_type: str | None = None, query: str = ""
) -> dict[str, Any]:
    """A Lambda Function URL event (payload 2.0, no API Gateway)."""
    event = http_api(
        method,
        path,
        body,
        content_type,
        query,
        domain="a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6.lambda-url.us-east-1.on.aws",
    )
    ctx = event["requestContext"]
    ctx["apiId"] = ctx["domainPrefix"]
    ctx["authorizer"] = {"iam": None}
    event.pop("routeKey")
    return event


def rest_api(
    method: str,
    path: str,
    body: bytes | str | None = None,
    content_type: str | None = None,
    stage: str = "prod",
) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event, as ``sam local generate-event apigateway aws-proxy``,
    invoked on the execute-api URL ``https://<api>.execute-api.<region>.amazonaws.com/<stage>/...``."""
    domain = "1234567890.execute-api.us-east-1.amazonaws.com"
    headers = {
        "Accept": "application/json",
        "Host": domain,
        "User-Agent": "curl/8.5.0",
        "X-Forwarded-For": "205.255.255.176",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
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
            "identity": {
                "sourceIp": "205.255.255.176",
                "userAgent": "curl/8.5.0",
                "accountId": None,
                "caller": None,
                "user": None,
            },
            "domainName": domain,
            "apiId": domain.split(".")[0],
        },
        "body": text,
        "isBase64Encoded": b64,
    }
