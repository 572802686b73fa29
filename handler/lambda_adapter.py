"""Mangum, hardened: an event Mangum cannot translate gets a 400 JSON response instead of an exception,
and API Gateway stage prefixes become the ASGI ``root_path`` (so URLs the app builds keep the stage).

Handles API Gateway REST (v1) proxy events, HTTP API (v2, also v1 payloads) events, Lambda Function URL
events (v2 shape), ALB events; base64 bodies included (binary multipart uploads).
"""

from __future__ import annotations

import binascii
import json
from typing import Any

from mangum import Mangum
from mangum.protocols import HTTPCycle

from handler.logs import log_event

__all__ = ["SafeMangum", "bad_event_response"]


def bad_event_response(message: str) -> dict[str, Any]:
    """An API-Gateway-shaped 400 response (the event's shape is unknown, so the common subset)."""
    return {
        "statusCode": 400,
        "headers": {"content-type": "application/json"},
        "multiValueHeaders": {},
        "body": json.dumps({"error": {"code": "bad_event", "message": message}}),
        "isBase64Encoded": False,
    }


def _stage_root(event: dict[str, Any], scope: dict[str, Any]) -> None:
    """Move a ``/<stage>`` prefix of the request path into ``root_path``: for HTTP API events the path
    holds the stage (non-default stages); for REST events only ``requestContext.path`` does."""
    ctx = event.get("requestContext") or {}
    stage = ctx.get("stage") if isinstance(ctx, dict) else None
    if not isinstance(stage, str) or not stage or stage == "$default":
        return
    prefix = f"/{stage}"
    path = scope.get("path") or "/"
    if event.get("version") == "2.0":
        if path == prefix or path.startswith(prefix + "/"):
            scope["root_path"] = prefix
            if path == prefix:
                scope["path"] = prefix + "/"
        return
    ctx_path = ctx.get("path")
    if isinstance(ctx_path, str) and ctx_path.startswith(prefix + "/") and not path.startswith(prefix + "/"):
        scope["root_path"] = prefix  # REST API on its execute-api URL: /<stage>/<path>
        scope["path"] = prefix + path


class SafeMangum(Mangum):
    """``Mangum(app, lifespan="off")`` that answers unusable events with a 400 JSON body."""

    def __init__(self, app: Any, **kwargs: Any):
        kwargs.setdefault("lifespan", "off")
        super().__init__(app, **kwargs)

    def __call__(self, event: Any, context: Any) -> dict[str, Any]:
        if not isinstance(event, dict):
            log_event("bad_event", "WARNING", reason="event is not a JSON object")
            return bad_event_response("the Lambda event is not an HTTP request (not a JSON object)")
        try:
            handler = self.infer(event, context)
        except RuntimeError:
            log_event("bad_event", "WARNING", reason="unknown event shape", keys=sorted(map(str, event))[:20])
            return bad_event_response(
                "the Lambda event is not an API Gateway (REST or HTTP API), Function URL or ALB request")
        try:
            scope = handler.scope
            body = handler.body
            if not isinstance(scope.get("method"), str) or not isinstance(scope.get("path"), str):
                raise TypeError("method and path must be strings")
        except (KeyError, TypeError, AttributeError, ValueError, binascii.Error, UnicodeError) as e:
            log_event("bad_event", "WARNING", reason=f"{type(e).__name__}: {e}"[:300])
            return bad_event_response(f"malformed {type(handler).__name__} event ({type(e).__name__}: {e})"[:500])
        _stage_root(event, scope)
        response = HTTPCycle(scope, body)(self.app)
        return handler(response)
