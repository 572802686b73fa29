"""The FastAPI application: routes, error rendering, API key, CORS, request logs.

``create_app(state)`` builds the app around a :class:`handler.state.ServiceState` (already loaded). The
same app runs under uvicorn (``handler.serve``) and on Lambda (``handler.lambda_function``).

Every error is ``{"error": {"code", "message"}}`` with a 4xx/5xx status; bad input never yields a 5xx.
"""

from __future__ import annotations

import hmac
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from handler import inputs
from handler.errors import ArtifactError, ImageTooLargeError, InvalidImageError, SearchError
from handler.inputs import (
    InvalidEmbeddingError,
    PayloadTooLargeError,
    SearchRequest,
    UnknownItemError,
    UnsupportedMediaTypeError,
)
from handler.logs import emit_metrics, log_event
from handler.media import ImageLocator, ThumbnailCache
from handler.schemas import (
    ERROR_RESPONSES,
    EmbeddingsJSON,
    EmbeddingsResponse,
    SearchForm,
    SearchJSON,
    SearchResponse,
    request_body,
)
from handler.state import ServiceState

__all__ = ["STATIC_DIR", "create_app"]

STATIC_DIR = Path(__file__).parent / "static"
PUBLIC_PATHS = ("/", "/health", "/favicon.ico")
_STATUS_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
                 422: "invalid_request", 429: "too_many_requests"}
_DEFAULT_MAX_IMAGE_BYTES = 4_500_000


class ServiceUnavailableError(SearchError):
    code = "unavailable"
    status = 503

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _base(request: Request) -> str:
    """Path prefix of the app (API Gateway stage), "" at the root."""
    return str(request.scope.get("root_path") or "").rstrip("/")


def _route_path(scope: dict[str, Any]) -> str:
    path: str = scope.get("path", "")
    root = scope.get("root_path") or ""
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root):] or "/"
    return path


# -- middleware -------------------------------------------------------------------------------------------------


class RequestLogMiddleware:
    """Refreshes the index (when due) before each request, then writes one JSON log line per request
    with EMF latency metrics: route, method, status, query type, k, latency_ms, index version."""

    def __init__(self, app: Any, state: ServiceState):
        self.app = app
        self.state = state
        self.cold = True

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        info: dict[str, Any] = {}
        scope.setdefault("state", {})["log"] = info
        path = _route_path(scope)
        if not path.startswith("/static/") and self.state.refresh_due():
            await run_in_threadpool(self.state.maybe_refresh)

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or (
                "/static" if path.startswith("/static/") else path if status < 400 else "unmatched")
            latency = round((time.perf_counter() - t0) * 1000, 3)
            cold, self.cold = self.cold, False
            index = self.state.index
            context = scope.get("aws.context")
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
            request_id = getattr(context, "aws_request_id", None)
            if request_id:
                fields["request_id"] = request_id
            emit_metrics({"latency_ms": (latency, "Milliseconds")}, {"route": route}, **fields)


class ApiKeyMiddleware:
    """When an API key is configured, every route except the page, its static assets and /health needs
    a matching ``x-api-key`` header (compared in constant time)."""

    def __init__(self, app: Any, api_key: str):
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        if path in PUBLIC_PATHS or path.startswith("/static/") or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers") or ():
            if name.lower() == b"x-api-key":
                given = value
                break
        if not hmac.compare_digest(given, self.key):
            message = "missing x-api-key header" if not given else "invalid API key"
            response = error_response(401, "unauthorized", message)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


# -- helpers ----------------------------------------------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes without reading them all."""
    length = request.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise PayloadTooLargeError(f"request body of {int(length)} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # request.form() parses from here
    return body


def _find_label(index: Any, item_id: Any) -> int | None:
    label = index.label_for(item_id)
    if label is None and isinstance(item_id, str) and re.fullmatch(r"-?[0-9]{1,18}", item_id):
        label = index.label_for(int(item_id))
    if label is None and isinstance(item_id, int):
        label = index.label_for(str(item_id))
    return label


def _normalise(values: list[float], dim: int) -> np.ndarray:
    if len(values) != dim:
        raise InvalidEmbeddingError(f"'embedding' has {len(values)} values, the index's dimension is {dim}")
    vec = np.asarray(values, dtype=np.float64)
    scale = float(np.max(np.abs(vec)))
    if scale == 0.0:
        raise InvalidEmbeddingError("'embedding' is the zero vector")
    vec = vec / scale
    return (vec / np.linalg.norm(vec)).astype(np.float32)


# -- the app ----------------------------------------------------------------------------------------------------


def create_app(state: ServiceState) -> FastAPI:
    settings = state.settings
    max_image_bytes = settings.max_image_bytes if settings else _DEFAULT_MAX_IMAGE_BYTES
    limit = inputs.body_limit(max_image_bytes)
    thumbnails = ThumbnailCache(max_pixels=settings.max_image_pixels if settings else None)
    locators: OrderedDict[str, ImageLocator] = OrderedDict()
    page_html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")

    app = FastAPI(
        title="CLIP image search",
        version="0.1.0",
        description="Text, image, vector and 'more like this' search over an image collection; CLIP embeddings.",
    )
    app.state.service = state
    app.state.thumbnails = thumbnails

    # -- state accessors ------------------------------------------------------------------------------------
    def embedder() -> Any:
        if state.embedder is None:
            problem = state.config_problem or state.model_problem
            msg = problem.message if problem else "model not loaded"
            raise ServiceUnavailableError("model_unavailable", f"the model is not available: {msg}")
        return state.embedder

    def index() -> Any:
        idx = state.index  # one snapshot per request: a hot swap never mixes versions
        if idx is None:
            if not state.index_configured and state.config_problem is None:
                raise ServiceUnavailableError("index_unavailable",
                                              "no index is configured (INDEX_URI unset): only /embeddings is served")
            problem = state.config_problem or state.index_problem
            msg = problem.message if problem else "index not loaded"
            raise ServiceUnavailableError("index_unavailable", f"the index is not available: {msg}")
        return idx

    def locator(idx: Any) -> ImageLocator:
        loc = locators.get(idx.version)
        if loc is None:
            loc = ImageLocator(idx.manifest.get("source"), settings.collection_root if settings else None,
                               settings.presign_expiry_seconds if settings else 3600)
            locators[idx.version] = loc
            while len(locators) > 2:
                locators.popitem(last=False)
        return loc

    # -- error rendering ------------------------------------------------------------------------------------
    @app.exception_handler(SearchError)
    async def _search_error(request: Request, exc: SearchError) -> JSONResponse:
        _log(request, exc.code)
        if exc.status >= 500 and not isinstance(exc, ServiceUnavailableError):
            log_event("request_failed", "ERROR", code=exc.code, message=exc.message)
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {_route_path(request.scope)[:200]}"
        elif exc.status_code == 405:
            detail = f"method {request.method} not allowed here"
        _log(request, code)
        return error_response(exc.status_code, code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        _log(request, "invalid_request")
        return error_response(400, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log_event("unhandled_exception", "ERROR", error=f"{type(exc).__name__}: {exc}"[:500],
                  path=_route_path(request.scope)[:200])
        return error_response(500, "internal_error", "internal error")

    def _log(request: Request, code: str) -> None:
        log = getattr(request.state, "log", None)
        if isinstance(log, dict):
            log["error"] = code

    # -- page -----------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        base = _base(request)
        html = page_html.replace("<head>", f'<head>\n<base href="{base}/">', 1)
        return HTMLResponse(html, headers={"cache-control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # -- health / info --------------------------------------------------------------------------------------
    @app.get("/health", summary="200 when the model and index are loaded and verified, else 503 with the reason")
    async def health() -> JSONResponse:
        body = state.health()
        if body["status"] != "ok":
            problems = state.problems()
            body["error"] = {"code": problems[0].code, "message": body["reason"]}
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    @app.get("/info", summary="model, bundle fingerprint, index version and size, service parameters")
    async def info() -> JSONResponse:
        idx = state.index
        body: dict[str, Any] = {
            "status": "ok" if state.healthy() else "unavailable",
            "model_id": state.model_id,
            "model": state.embedder.info() if state.embedder is not None else None,
            "index": None,
            "parameters": {
                "k_default": inputs.K_DEFAULT, "k_max": inputs.K_MAX, "offset_max": inputs.OFFSET_MAX,
                "ef_max": inputs.EF_MAX, "max_text_chars": inputs.MAX_TEXT_CHARS,
                "max_embed_texts": inputs.MAX_EMBED_TEXTS, "max_embed_images": inputs.MAX_EMBED_IMAGES,
                "max_body_bytes": limit,
                **({k: v for k, v in settings.public().items() if k not in ("model_uri", "index_uri", "cache_dir")}
                   if settings else {}),
            },
            "timings": state.timings,
        }
        if state.problems():
            body["problems"] = [p.as_dict() for p in state.problems()]
        if idx is not None:
            m = idx.manifest
            body["index"] = {
                "version": idx.version, "count": idx.count, "dim": idx.dim,
                "model_fingerprint": idx.model_fingerprint, "precision": m.get("precision"),
                "space": m.get("space"), "M": m.get("M"), "ef": idx.ef, "ef_construction": m.get("ef_construction"),
                "built_at": m.get("built_at"), "builder": m.get("builder"), "stats": m.get("stats"),
                "swaps": state.swaps,
            }
        return JSONResponse(body)

    # -- search ---------------------------------------------------------------------------------------------
    async def parse_search(request: Request) -> SearchRequest:
        mt = inputs.media_type(request.headers.get("content-type"))
        if mt == "application/json" or mt.endswith("+json"):
            body = await read_body(request, limit)
            return inputs.search_from_json(inputs.parse_json(body), max_image_bytes)
        if mt in ("multipart/form-data", "application/x-www-form-urlencoded"):
            await read_body(request, limit)
            async with request.form(max_files=2, max_fields=16, max_part_size=limit) as form:
                return await inputs.search_from_form(form, max_image_bytes)
        if mt.startswith("image/"):
            body = await read_body(request, limit)
            if len(body) > max_image_bytes:
                raise ImageTooLargeError(f"image is {len(body)} bytes, over the limit of {max_image_bytes} bytes")
            if not body:
                raise InvalidImageError("empty request body: expected image bytes")
            q = request.query_params
            values = {n: inputs.form_number(q[n], n, float if n == "min_score" else int)
                      for n in ("k", "offset", "min_score", "ef") if n in q}
            return inputs.search_params(values, SearchRequest(type="image", image=body))
        raise UnsupportedMediaTypeError(
            f"unsupported content type {mt or '(none)'!r}: send application/json, multipart/form-data "
            "(an 'image' file or a 'text' field) or an image/* body")

    def run_search(req: SearchRequest, emb: Any, idx: Any, base: str) -> dict[str, Any]:
        query: dict[str, Any] = {"type": req.type}
        exclude: int | None = None
        if req.type == "text":
            assert req.text is not None
            ids, truncated = emb.tokenize_with_info([req.text], req.language)
            vec = emb.embed_tokens(ids)[0]
            query.update(text=req.text, truncated=bool(truncated[0] or req.text_precut))
        elif req.type == "image":
            img = emb.decode(req.image)
            query.update(bytes=len(req.image or b""), width=img.size[0], height=img.size[1])
            vec = emb.embed_pixels(emb.preprocessor(img))[0]
        elif req.type == "embedding":
            assert req.embedding is not None
            vec = _normalise(req.embedding, idx.dim)
            query.update(dim=len(req.embedding))
        else:
            label = _find_label(idx, req.item_id)
            if label is None:
                raise UnknownItemError(f"no item with id {req.item_id!r} in index version {idx.version}")
            vec = idx.embedding(label)
            exclude = label
            query.update(id=req.item_id)
        query.update(k=req.k, offset=req.offset)
        if req.min_score is not None:
            query["min_score"] = req.min_score
        if req.ef is not None:
            query["ef"] = req.ef
        if exclude is None:
            hits = idx.search(vec, req.k, req.offset, ef=req.ef, min_score=req.min_score)[0]
        else:  # "more like this": the item itself is not a result
            hits = idx.search(vec, req.k + req.offset + 1, 0, ef=req.ef, min_score=req.min_score)[0]
            hits = [h for h in hits if h.label != exclude][req.offset:req.offset + req.k]
        loc = locator(idx)
        results = []
        for hit in hits:
            item = hit.item
            image_url, thumb_url = loc.urls(item, base)
            metadata = item.get("metadata")
            results.append({
                "id": item.get("id"), "uri": item.get("uri"), "score": float(hit.score),
                "metadata": metadata if isinstance(metadata, dict) else {},
                "image_url": image_url, "thumbnail_url": thumb_url,
            })
        return {"results": results, "query": query}

    @app.post(
        "/search",
        summary="search the collection by text, image, vector or item id",
        response_model=None,
        responses={200: {"model": SearchResponse}, 404: {"model": ERROR_RESPONSES[400]["model"],
                                                          "description": "unknown id"}, **ERROR_RESPONSES},
        openapi_extra=request_body(("application/json", SearchJSON), ("multipart/form-data", SearchForm)),
    )
    async def search(request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        req = await parse_search(request)
        request.state.log.update(req.log_fields())
        emb = embedder()
        idx = index()
        request.state.log["index_version"] = idx.version
        body = await run_in_threadpool(run_search, req, emb, idx, _base(request))
        request.state.log["results"] = len(body["results"])
        if req.type == "text":
            request.state.log["truncated"] = body["query"]["truncated"]
        body.update(model=state.model_id, index_version=idx.version,
                    took_ms=round((time.perf_counter() - t0) * 1000, 3))
        return JSONResponse(body)

    # -- embeddings -----------------------------------------------------------------------------------------
    def run_embeddings(req: inputs.EmbeddingsRequest, emb: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if req.texts:
            ids, truncated = emb.tokenize_with_info(req.texts, req.language)
            out["text_embeddings"] = emb.embed_tokens(ids).tolist()
            out["text_truncated"] = [bool(t or c) for t, c in zip(truncated, req.precut, strict=True)]
        if req.images:
            pixels = np.stack([emb.preprocess(data) for data in req.images])
            out["image_embeddings"] = emb.embed_pixels(pixels).tolist()
        return out

    @app.post(
        "/embeddings",
        summary="CLIP embeddings of texts and/or base64 images (works without an index)",
        response_model=None,
        responses={200: {"model": EmbeddingsResponse}, **ERROR_RESPONSES},
        openapi_extra=request_body(("application/json", EmbeddingsJSON)),
    )
    async def embeddings(request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        mt = inputs.media_type(request.headers.get("content-type"))
        if not (mt == "application/json" or mt.endswith("+json")):
            raise UnsupportedMediaTypeError(f"unsupported content type {mt or '(none)'!r}: send application/json")
        body = await read_body(request, limit)
        req = inputs.embeddings_from_json(inputs.parse_json(body), max_image_bytes)
        request.state.log.update(req.log_fields())
        emb = embedder()
        out = await run_in_threadpool(run_embeddings, req, emb)
        out.update(model=state.model_id, dim=emb.dim, model_fingerprint=emb.model_fingerprint, normalized=True,
                   took_ms=round((time.perf_counter() - t0) * 1000, 3))
        return JSONResponse(out)

    # -- item images ----------------------------------------------------------------------------------------
    def local_image(item_id: str) -> Any:
        idx = index()
        label = _find_label(idx, item_id)
        if label is None:
            raise UnknownItemError(f"no item with id {item_id[:200]!r} in index version {idx.version}")
        found = locator(idx).local_file(idx.items[label])
        if found is None:
            raise UnknownItemError(f"item {item_id[:200]!r} has no image served by this service")
        return found

    @app.get("/items/{item_id:path}/image", summary="the item's image file (local collections)",
             response_class=Response, responses={404: {"model": ERROR_RESPONSES[400]["model"]}})
    def item_image(item_id: str, request: Request) -> Response:
        found = local_image(item_id)
        return FileResponse(found.path, media_type=found.media_type,
                            headers={"cache-control": "public, max-age=3600", "x-content-type-options": "nosniff"})

    @app.get("/items/{item_id:path}/thumbnail", summary="a small JPEG/PNG of the item's image (cached)",
             response_class=Response, responses={404: {"model": ERROR_RESPONSES[400]["model"]}})
    def item_thumbnail(item_id: str, request: Request) -> Response:
        found = local_image(item_id)
        if request.headers.get("if-none-match") == found.etag:
            return Response(status_code=304, headers={"etag": found.etag})
        try:
            data, media = thumbnails.get(found)
        except SearchError as e:
            raise ArtifactError(f"item {item_id[:200]!r}: its image cannot be read ({e.message})") from None
        except OSError as e:
            raise ArtifactError(f"item {item_id[:200]!r}: its image cannot be read ({e.strerror or e})") from None
        return Response(data, media_type=media, headers={
            "cache-control": "public, max-age=3600", "etag": found.etag, "x-content-type-options": "nosniff"})

    # -- middleware (last added = outermost) ----------------------------------------------------------------
    if settings is not None and settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    app.add_middleware(RequestLogMiddleware, state=state)
    if settings is not None and settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["content-type", "x-api-key"], max_age=600)
    return app
