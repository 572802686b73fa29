"""ASGI middleware of the service: API key, index hot swap, request log + metrics, CORS (setup)."""

from __future__ import annotations

import hmac
import time
from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from handler.logs import emit_metrics
from handler.responses import error_response, route_path
from handler.state import ServiceState

__all__ = [
    "ApiKeyMiddleware",
    "IndexRefreshMiddleware",
    "RequestLogMiddleware",
    "add_middleware",
    "has_api_key",
    "metric_route",
]

PUBLIC_PATHS = ("/", "/health", "/favicon.ico")
Scope = MutableMapping[str, Any]


def metric_route(scope: Scope, path: str, status: int) -> str:
    """The ``route`` metric dimension, from a fixed set: the matched route template, "/static",
    "redirect" (e.g. the trailing-slash 307) or "unmatched" - never the request's own path."""
    template = getattr(scope.get("route"), "path", None)
    if isinstance(template, str) and template:
        return template
    if path.startswith("/static/"):
        return "/static"
    return "redirect" if 300 <= status < 400 else "unmatched"


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value)
    return b""


def has_api_key(scope: Scope, api_key: str | None) -> bool:
    """Whether the request may see details: no API key is configured, or it carries the right one."""
    return api_key is None or hmac.compare_digest(_header(scope, b"x-api-key"), api_key.encode())


def _is_preflight(scope: Scope) -> bool:
    """A CORS preflight: OPTIONS with Origin and Access-Control-Request-Method (browsers send no API key)."""
    if scope.get("method") != "OPTIONS":
        return False
    names = {name.lower() for name, _ in scope.get("headers") or ()}
    return b"origin" in names and b"access-control-request-method" in names


class IndexRefreshMiddleware:
    """Before a request (static assets aside), checks the index pointer when the refresh interval has
    passed and swaps in a new version (:meth:`ServiceState.maybe_refresh`, in a worker thread)."""

    def __init__(self, app: Any, state: ServiceState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and not route_path(scope).startswith("/static/")
            and self.state.refresh_due()
        ):
            await run_in_threadpool(self.state.maybe_refresh)
        await self.app(scope, receive, send)


class RequestLogMiddleware:
    """One JSON log line per request with EMF latency metrics: route, method, status, query type, k,
    latency_ms, index version. Routes add fields to ``request.state.log``."""

    def __init__(self, app: Any, state: ServiceState):
        self.app = app
        self.state = state
        self.cold = True

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        info: dict[str, Any] = {}
        scope.setdefault("state", {})["log"] = info
        path = route_path(scope)

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            latency = round((time.perf_counter() - t0) * 1000, 3)
            cold, self.cold = self.cold, False
            index = self.state.index
            fields = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "level": "INFO" if status < 500 else "ERROR",
                "event": "request",
                "method": scope.get("method"),
                "path": path[:200],
                "status": status,
                "index_version": index.version if index is not None else None,
                "cold_start": cold,
                **info,
            }
            request_id = getattr(scope.get("aws.context"), "aws_request_id", None)
            if request_id:
                fields["request_id"] = request_id
            emit_metrics(
                {"latency_ms": (latency, "Milliseconds")},
                {"route": metric_route(scope, path, status)},
                **fields,
            )


class ApiKeyMiddleware:
    """When an API key is configured, every route except the page, its static assets, /health and CORS
    preflights needs a matching ``x-api-key`` header (compared in constant time)."""

    def __init__(self, app: Any, api_key: str, cors: bool = False):
        self.app = app
        self.key = api_key.encode()
        self.cors = cors  # preflights pass only when CORS is configured (else they cannot succeed anyway)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        if path in PUBLIC_PATHS or path.startswith("/static/") or (self.cors and _is_preflight(scope)):
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-api-key")
        if not hmac.compare_digest(given, self.key):
            message = "missing x-api-key header" if not given else "invalid API key"
            await error_response(401, "unauthorized", message)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def add_middleware(app: FastAPI, state: ServiceState) -> None:
    """Outermost first: CORS, request log (its latency includes an index check), index refresh, API key."""
    settings = state.settings
    cors = settings is not None and bool(settings.cors_origins)
    if state.api_key:  # last added = outermost: add innermost first
        app.add_middleware(ApiKeyMiddleware, api_key=state.api_key, cors=cors)
    app.add_middleware(IndexRefreshMiddleware, state=state)
    app.add_middleware(RequestLogMiddleware, state=state)
    if cors:
        assert settings is not None
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["content-type", "x-api-key"],
            max_age=600,
        )
