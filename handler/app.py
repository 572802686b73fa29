"""The FastAPI application: ``create_app(state)`` builds it around a :class:`handler.state.ServiceState`
(already loaded) from the routers of :mod:`handler.routes`, the error rendering of
:mod:`handler.responses` and the middleware of :mod:`handler.middleware`. The same app runs under uvicorn
(``handler.serve``) and on Lambda (``handler.lambda_function``).

Every error is ``{"error": {"code", "message"}}`` with a 4xx/5xx status; bad input never yields a 5xx.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from handler import __version__
from handler.deps import Service
from handler.middleware import add_middleware
from handler.responses import JSONResponse, install_error_handlers
from handler.routes import duplicates, embeddings, items, meta, search
from handler.routes.meta import STATIC_DIR
from handler.state import ServiceState

__all__ = ["STATIC_DIR", "create_app"]


def create_app(state: ServiceState) -> FastAPI:
    app = FastAPI(
        default_response_class=JSONResponse,
        docs_url=None,  # served by handler.routes.meta from the package's static folder, not a CDN
        redoc_url=None,  # ReDoc is CDN-only: blank offline, so not offered
        title="CLIP image search",
        version=__version__,
        description=(
            "Text, image, vector and 'more like this' search over an image collection; CLIP embeddings."
        ),
    )
    service = Service.of(state)
    app.state.service = state
    app.state.service_context = service
    app.state.thumbnails = service.thumbnails
    install_error_handlers(app)
    app.include_router(meta.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(search.router)
    app.include_router(embeddings.router)
    app.include_router(items.router)
    app.include_router(duplicates.router)
    add_middleware(app, state)
    return app
