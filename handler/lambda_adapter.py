"""Mangum, hardened: an event Mangum cannot translate gets a 400 JSON response instead of an exception,
and API Gateway stage prefixes become the ASGI ``root_path`` (so URLs the app builds keep the stage).
Every response is JSON with the error shape when the app does not answer itself: lone surrogates in the
path (legal in the event's JSON, impossible in a real URL) become U+FFFD like uvicorn's decoding would
make them, and a failure outside the app (Mangum's plain-text 500) becomes ``internal_error``.

Handles API Gateway REST (v1) proxy events, HTTP API (v2, also v1 payloads) events, Lambda Function URL
events (v2 shape), ALB events; base64 bodies included (binary multipart uploads).
"""

from __future__ import annotations

import binascii
import json
import re
from typing import Any

from mangum import Mangum
from mangum.adapter import HANDLERS

from handler.logs import log_event

__all__ = ["SAFE_HANDLERS", "SafeMangum", "bad_event_response", "error_event_response"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def error_event_response(status: int, code: str, message: str) -> dict[str, Any]:
    """An API-Gateway-shaped JSON error response (the common subset of the event shapes)."""
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "multiValueHeaders": {},
        "body": json.dumps({"error": {"code": code, "message": message}}),
        "isBase64Encoded": False,
    }


def bad_event_response(message: str) -> dict[str, Any]:
    """A 400 ``bad_event`` response: the event is not an HTTP request Mangum can translate."""
    return error_event_response(400, "bad_event", message)


def _scrub_paths(scope: dict[str, Any]) -> None:
    """Lone surrogates -> U+FFFD in the scope's path strings (raw_path is bytes: kept valid UTF-8)."""
    for key in ("path", "root_path"):
        value = scope.get(key)
        if isinstance(value, str) and _SURROGATE.search(value):
            scope[key] = _SURROGATE.sub("\ufffd", value)
            if key == "path":
                scope["raw_path"] = None


def _is_json(response: dict[str, Any]) -> bool:
    for name, value in response.get("headers") or ():
        if bytes(name).lower() == b"content-type":
            return bytes(value).split(b";")[0].strip().lower() == b"application/json"
    return False


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


class _BadEvent(Exception):
    """The event is not an HTTP request Mangum can translate (``message`` says why)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.message = message
        self.reason = reason


class _AppFailed(Exception):
    """Mangum's own text/plain 500: the app failed outside its error handlers."""


def _hardened(base: type[Any]) -> type[Any]:
    """A subclass of one of Mangum's event handlers: a malformed event raises :class:`_BadEvent`, the scope
    gets U+FFFD paths and the stage as ``root_path``, and a non-JSON 5xx raises :class:`_AppFailed`."""

    def malformed(self: Any, e: Exception) -> _BadEvent:
        return _BadEvent(
            f"malformed {base.__name__} event ({type(e).__name__}: {e})"[:500],
            f"{type(e).__name__}: {e}"[:300],
        )

    class Hardened(base):  # type: ignore[misc, valid-type]
        @property
        def scope(self) -> dict[str, Any]:
            try:
                scope: dict[str, Any] = super().scope
                if not isinstance(scope.get("method"), str) or not isinstance(scope.get("path"), str):
                    raise TypeError("method and path must be strings")
            except _ERRORS as e:
                raise malformed(self, e) from None
            _scrub_paths(scope)
            _stage_root(self.event, scope)
            return scope

        @property
        def body(self) -> bytes:
            try:
                return bytes(super().body)
            except _ERRORS as e:
                raise malformed(self, e) from None

        def __call__(self, response: Any) -> dict[str, Any]:
            if response["status"] >= 500 and not _is_json(response):
                raise _AppFailed(f"the app failed outside its error handlers ({response['status']})")
            out: dict[str, Any] = super().__call__(response)
            return out

    Hardened.__name__ = Hardened.__qualname__ = f"Safe{base.__name__}"
    return Hardened


_ERRORS = (KeyError, TypeError, AttributeError, ValueError, binascii.Error, UnicodeError)
#: Mangum's handlers in its own inference order, hardened; given as ``custom_handlers`` they come first.
SAFE_HANDLERS = [_hardened(cls) for cls in HANDLERS]


class SafeMangum(Mangum):
    """``Mangum(app, lifespan="off")`` that answers unusable events with a 400 JSON body and failures with a
    500 JSON body. Built on Mangum's extension points (``custom_handlers``, ``infer``); ``__call__`` only
    wraps Mangum's own to turn those exceptions into responses."""

    def __init__(self, app: Any, **kwargs: Any):
        kwargs.setdefault("lifespan", "off")
        kwargs["custom_handlers"] = [
            *(kwargs.get("custom_handlers") or ()),
            *SAFE_HANDLERS,
        ]  # a caller's first, as Mangum
        super().__init__(app, **kwargs)

    def infer(self, event: Any, context: Any) -> Any:
        try:
            return super().infer(event, context)
        except RuntimeError:
            raise _BadEvent(
                "the Lambda event is not an API Gateway (REST or HTTP API), Function URL or ALB request",
                "unknown event shape",
            ) from None

    def __call__(self, event: Any, context: Any) -> dict[str, Any]:
        if not isinstance(event, dict):
            log_event("bad_event", "WARNING", reason="event is not a JSON object")
            return bad_event_response("the Lambda event is not an HTTP request (not a JSON object)")
        try:
            return super().__call__(event, context)
        except _BadEvent as e:
            fields = {"keys": sorted(map(str, event))[:20]} if e.reason == "unknown event shape" else {}
            log_event("bad_event", "WARNING", reason=e.reason, **fields)
            return bad_event_response(e.message)
        except Exception as e:
            log_event("lambda_error", "ERROR", error=f"{type(e).__name__}: {e}"[:300])
            return error_event_response(500, "internal_error", "internal error")
