"""The page, the API docs (served from the package, no CDN), /health and /info."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from handler import limits
from handler.deps import Service, base_path, get_service
from handler.middleware import has_api_key
from handler.responses import JSONResponse

__all__ = ["STATIC_DIR", "router"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
router = APIRouter()
ServiceDep = Annotated[Service, Depends(get_service)]


@functools.cache
def _page_html() -> str:
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8")


@router.get("/", include_in_schema=False)
async def page(request: Request) -> HTMLResponse:
    html = _page_html().replace("<head>", f'<head>\n<base href="{base_path(request)}/">', 1)
    return HTMLResponse(html, headers={"cache-control": "no-cache"})


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    base = base_path(request)
    assets = f"{base}/static/swagger-ui"
    return get_swagger_ui_html(
        openapi_url=f"{base}{request.app.openapi_url}",
        title=f"{request.app.title} - API",
        swagger_js_url=f"{assets}/swagger-ui-bundle.js",
        swagger_css_url=f"{assets}/swagger-ui.css",
        swagger_favicon_url=f"{assets}/favicon-32x32.png",
    )


@router.get(
    "/health",
    summary="200 when the model and index are loaded and verified, else 503 with reason "
    "codes (the messages need x-api-key when API_KEY is set)",
)
async def health(request: Request, service: ServiceDep) -> JSONResponse:
    state = service.state
    details = has_api_key(request.scope, state.api_key)
    body = state.health(details=details)
    if body["status"] != "ok":
        problems = state.problems()
        message = (
            body["reason"]
            if details
            else (
                f"the service is unavailable ({body['reason']}); the details are in the service's logs "
                "(or send x-api-key)"
            )
        )
        body["error"] = {"code": problems[0].code, "message": message}
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


@router.get("/info", summary="model, bundle fingerprint, index version and size, service parameters")
async def info(service: ServiceDep) -> JSONResponse:
    state, settings, idx = service.state, service.state.settings, service.state.index
    hidden = ("model_uri", "index_uri", "cache_dir")
    body: dict[str, Any] = {
        "status": "ok" if state.healthy() else "unavailable",
        "model_id": state.model_id,
        "model": state.embedder.info() if state.embedder is not None else None,
        "index": None,
        "parameters": {
            "k_default": limits.K_DEFAULT,
            "k_max": limits.K_MAX,
            "offset_max": limits.OFFSET_MAX,
            "ef_max": limits.EF_MAX,
            "max_text_chars": limits.MAX_TEXT_CHARS,
            "max_embed_texts": limits.MAX_EMBED_TEXTS,
            "max_request_text_chars": limits.MAX_REQUEST_TEXT_CHARS,
            "max_embed_images": limits.MAX_EMBED_IMAGES,
            "max_body_bytes": service.body_limit,
            **({k: v for k, v in settings.public().items() if k not in hidden} if settings else {}),
        },
        "timings": state.timings,
    }
    if state.problems():
        body["problems"] = [p.as_dict() for p in state.problems()]
    if state.warnings():
        body["warnings"] = [w.as_dict() for w in state.warnings()]
    if idx is not None:
        m = idx.manifest
        body["index"] = {
            "version": idx.version,
            "count": idx.count,
            "dim": idx.dim,
            "model_fingerprint": idx.model_fingerprint,
            "precision": m.get("precision"),
            "space": m.get("space"),
            "M": m.get("M"),
            "ef": idx.ef,
            "ef_by_query": idx.ef_by_query or None,
            "ef_construction": m.get("ef_construction"),
            "built_at": m.get("built_at"),
            "builder": m.get("builder"),
            "stats": m.get("stats"),
            "swaps": state.swaps,
        }
    return JSONResponse(body)
