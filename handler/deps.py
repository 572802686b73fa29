"""What the routes depend on: the service (state, limits, caches), the model and the index (503 when
missing), the request body read within its limit, and the app's path prefix."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData

from handler.config import DEFAULT_MAX_REQUEST_PIXELS
from handler.core.runtime import Embedder
from handler.core.search import SearchIndex
from handler.limits import body_limit
from handler.media import ImageLocator, ThumbnailCache
from handler.request_errors import PayloadTooLargeError
from handler.responses import ServiceUnavailableError
from handler.state import ServiceState

__all__ = ["Service", "base_path", "form", "get_embedder", "get_index", "get_service", "read_body"]

_DEFAULT_MAX_IMAGE_BYTES = 4_500_000


@dataclass
class Service:
    """One per app (``app.state.service_context``): the state, request limits and per-app caches."""

    state: ServiceState
    max_image_bytes: int = _DEFAULT_MAX_IMAGE_BYTES
    max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS
    thumbnails: ThumbnailCache = field(default_factory=ThumbnailCache)
    _locators: OrderedDict[str, ImageLocator] = field(default_factory=OrderedDict, repr=False)

    @classmethod
    def of(cls, state: ServiceState) -> Service:
        s = state.settings
        if s is None:
            return cls(state)
        return cls(
            state, s.max_image_bytes, s.max_request_pixels, ThumbnailCache(max_pixels=s.max_image_pixels)
        )

    @property
    def body_limit(self) -> int:
        return body_limit(self.max_image_bytes)

    def locator(self, idx: SearchIndex) -> ImageLocator:
        """The image locator of an index version (the last two versions kept)."""
        loc = self._locators.get(idx.version)
        if loc is None:
            s = self.state.settings
            loc = ImageLocator(
                idx.manifest.get("source"),
                s.collection_root if s else None,
                s.presign_expiry_seconds if s else 3600,
            )
            self._locators[idx.version] = loc
            while len(self._locators) > 2:
                self._locators.popitem(last=False)
        return loc


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service_context
    return service


def get_embedder(request: Request) -> Embedder:
    state = get_service(request).state
    if state.embedder is None:
        problem = state.config_problem or state.model_problem
        msg = problem.message if problem else "model not loaded"
        raise ServiceUnavailableError("model_unavailable", f"the model is not available: {msg}")
    return state.embedder


def get_index(request: Request) -> SearchIndex:
    """The current index: one snapshot per request, so a hot swap never mixes versions."""
    state = get_service(request).state
    idx = state.index
    if idx is None:
        if not state.index_configured and state.config_problem is None:
            raise ServiceUnavailableError(
                "index_unavailable", "no index is configured (INDEX_URI unset): only /embeddings is served"
            )
        problem = state.config_problem or state.index_problem
        msg = problem.message if problem else "index not loaded"
        raise ServiceUnavailableError("index_unavailable", f"the index is not available: {msg}")
    return idx


def base_path(request: Request) -> str:
    """Path prefix of the app (API Gateway stage), "" at the root."""
    return str(request.scope.get("root_path") or "").rstrip("/")


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
    return b"".join(chunks)


@asynccontextmanager
async def form(request: Request, body: bytes, limit: int) -> AsyncIterator[FormData]:
    """The form in ``body`` (already read within its limit), parsed by Starlette from a request that
    replays it: the original request's stream is consumed."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async with Request(request.scope, replay).form(max_files=2, max_fields=16, max_part_size=limit) as parsed:
        yield parsed
