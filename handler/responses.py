"""JSON responses and error rendering: every error is ``{"error": {"code", "message"}}`` with a 4xx/5xx
status; bad input never yields a 5xx."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse as _JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from handler.core.errors import SearchError
from handler.logs import dumps, log_event

__all__ = [
    "JSONResponse",
    "ServiceUnavailableError",
    "error_response",
    "install_error_handlers",
    "route_path",
]

_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
}


class ServiceUnavailableError(SearchError):
    code = "unavailable"
    status = 503

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class JSONResponse(_JSONResponse):
    """Starlette's JSONResponse, but a body with lone surrogates (an id or message echoed from a Lambda
    event or an index) is written with ``\\u`` escapes instead of failing with a 500."""

    def render(self, content: Any) -> bytes:
        return dumps(content, allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def route_path(scope: MutableMapping[str, Any]) -> str:
    """The request path below the app's ``root_path`` (an API Gateway stage)."""
    path: str = scope.get("path", "")
    root = scope.get("root_path") or ""
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


def _note(request: Request, code: str) -> None:
    """The error code for the request log line (see handler.middleware.RequestLogMiddleware)."""
    log = getattr(request.state, "log", None)
    if isinstance(log, dict):
        log["error"] = code


async def _search_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SearchError)
    _note(request, exc.code)
    if exc.status >= 500 and not isinstance(exc, ServiceUnavailableError):
        log_event("request_failed", "ERROR", code=exc.code, message=exc.message)
    return error_response(exc.status, exc.code, exc.message)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {route_path(request.scope)[:200]}"
    elif exc.status_code == 405:
        detail = f"method {request.method} not allowed here"
    _note(request, code)
    return error_response(exc.status_code, code, detail, headers=getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    _note(request, "invalid_request")
    return error_response(400, "invalid_request", "; ".join(parts) or "invalid request")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log_event(
        "unhandled_exception",
        "ERROR",
        error=f"{type(exc).__name__}: {exc}"[:500],
        path=route_path(request.scope)[:200],
    )
    return error_response(500, "internal_error", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SearchError, _search_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
