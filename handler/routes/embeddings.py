"""``POST /embeddings``: CLIP embeddings of texts and/or base64 images (served without an index too)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from handler import bodies
from handler.core.runtime import Embedder
from handler.deps import Service, get_embedder, get_service, read_body
from handler.fields import check_pixel_budget
from handler.openapi import ERROR_RESPONSES, request_body
from handler.request import EmbeddingsRequest
from handler.request_errors import UnsupportedMediaTypeError
from handler.response_models import EmbeddingsResponse
from handler.responses import JSONResponse
from handler.schemas import EmbeddingsJSON
from handler.validation import validate

__all__ = ["router"]

router = APIRouter()


async def parse_embeddings(
    request: Request, service: Annotated[Service, Depends(get_service)]
) -> EmbeddingsRequest:
    request.state.t0 = time.perf_counter()
    mt = bodies.media_type(request.headers.get("content-type"))
    if not (mt == "application/json" or mt.endswith("+json")):
        raise UnsupportedMediaTypeError(f"unsupported content type {mt or '(none)'!r}: send application/json")
    body = await read_body(request, service.body_limit)
    req = await run_in_threadpool(
        lambda: validate(EmbeddingsJSON, bodies.parse_json(body)).request(service.max_image_bytes)
    )
    request.state.log.update(req.log_fields())
    return req


def run_embeddings(req: EmbeddingsRequest, emb: Embedder, service: Service) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if req.texts:
        ids, truncated = emb.tokenize_with_info(req.texts, req.language)
        out["text_embeddings"] = emb.embed_tokens(ids).tolist()
        out["text_truncated"] = [bool(t or c) for t, c in zip(truncated, req.precut, strict=True)]
    if req.images:
        check_pixel_budget(req.images, service.max_request_pixels, emb.max_pixels)
        idx = service.state.index  # with an index, images are prepared like its images (comparable vectors)
        options = idx.image_options if idx is not None else None
        pixels = np.stack([emb.preprocess(data, options) for data in req.images])
        out["image_embeddings"] = emb.embed_pixels(pixels).tolist()
    return out


@router.post(
    "/embeddings",
    summary="CLIP embeddings of texts and/or base64 images (works without an index)",
    response_model=None,
    responses={200: {"model": EmbeddingsResponse}, **ERROR_RESPONSES},
    openapi_extra=request_body(("application/json", EmbeddingsJSON)),
)
async def embeddings(
    request: Request,
    req: Annotated[EmbeddingsRequest, Depends(parse_embeddings)],  # dependencies resolve in order: 400s first
    emb: Annotated[Embedder, Depends(get_embedder)],
    service: Annotated[Service, Depends(get_service)],
) -> JSONResponse:
    out = await run_in_threadpool(run_embeddings, req, emb, service)
    out.update(
        model=service.state.model_id,
        dim=emb.dim,
        model_fingerprint=emb.model_fingerprint,
        normalized=True,
        took_ms=round((time.perf_counter() - request.state.t0) * 1000, 3),
    )
    return JSONResponse(out)
