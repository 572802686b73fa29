"""``POST /search``: by text, image, vector or item id.

The route reads the raw request because one path takes three kinds of body (JSON, a form with an image
file, a raw ``image/*`` body); each is validated by the models of :mod:`handler.schemas`."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from handler import inputs
from handler.core.errors import ImageTooLargeError, InvalidImageError
from handler.core.filtered_search import filtered_search
from handler.core.filters import compile_mask
from handler.core.index import SearchIndex
from handler.core.preprocess import image_size
from handler.core.runtime import Embedder
from handler.deps import Service, base_path, form, get_embedder, get_index, get_service, read_body
from handler.inputs import InvalidEmbeddingError, SearchRequest, UnknownItemError, UnsupportedMediaTypeError
from handler.responses import JSONResponse
from handler.schemas import ERROR_RESPONSES, SearchForm, SearchJSON, SearchResponse, request_body, validate

__all__ = ["find_label", "router"]

router = APIRouter()


def _is_json(mt: str) -> bool:
    return mt == "application/json" or mt.endswith("+json")


async def parse_search(request: Request, service: Annotated[Service, Depends(get_service)]) -> SearchRequest:
    """The validated request; its sizes and parameters go to the request log."""
    request.state.t0 = time.perf_counter()
    req = await _parse(request, service)
    request.state.log.update(req.log_fields())
    return req


async def _parse(request: Request, service: Service) -> SearchRequest:
    """The content-type dispatch: JSON, a form (multipart or urlencoded) or a raw image body."""
    limit, max_bytes = service.body_limit, service.max_image_bytes
    mt = inputs.media_type(request.headers.get("content-type"))
    if _is_json(mt):
        body = await read_body(request, limit)
        # parsing, validation and base64 decoding are CPU-bound: off the event loop
        return await run_in_threadpool(lambda: validate(SearchJSON, inputs.parse_json(body)).query(max_bytes))
    if mt in ("multipart/form-data", "application/x-www-form-urlencoded"):
        body = await read_body(request, limit)
        async with form(request, body, limit) as parsed:
            fields = await inputs.read_form(parsed, max_bytes)
        return await run_in_threadpool(lambda: validate(SearchForm, fields).query(max_bytes))
    if mt.startswith("image/"):
        body = await read_body(request, limit)
        if len(body) > max_bytes:
            raise ImageTooLargeError(f"image is {len(body)} bytes, over the limit of {max_bytes} bytes")
        if not body:
            raise InvalidImageError("empty request body: expected image bytes")
        params = {**inputs.numbers(request.query_params), "image": body}
        if request.query_params.get("filter"):
            params["filter"] = request.query_params["filter"]
        return validate(SearchForm, params).query(max_bytes)
    raise UnsupportedMediaTypeError(
        f"unsupported content type {mt or '(none)'!r}: send application/json, multipart/form-data "
        "(an 'image' file or a 'text' field) or an image/* body"
    )


def find_label(index: SearchIndex, item_id: Any) -> int | None:
    """The index label of an id; "12" finds the integer id 12 and 12 the string id "12"."""
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


def run_search(
    req: SearchRequest, emb: Embedder, idx: SearchIndex, service: Service, base: str
) -> dict[str, Any]:
    query: dict[str, Any] = {"type": req.type}
    exclude: int | None = None
    if req.type == "text":
        assert req.text is not None
        ids, truncated = emb.tokenize_with_info([req.text], req.language)
        vec = emb.embed_tokens(ids)[0]
        query.update(text=req.text, truncated=bool(truncated[0] or req.text_precut))
    elif req.type == "image":
        assert req.image is not None
        inputs.check_pixel_budget([req.image], service.max_request_pixels, emb.max_pixels)
        options = idx.image_options  # prepared like the index's images (background, JPEG draft)
        img = emb.decode(req.image, options)
        width, height = image_size(img)
        query.update(bytes=len(req.image), width=width, height=height)
        vec = emb.embed_pixels(emb.preprocessor_for(options)(img))[0]
    elif req.type == "embedding":
        assert req.embedding is not None
        vec = _normalise(req.embedding, idx.dim)
        query.update(dim=len(req.embedding))
    else:
        label = find_label(idx, req.item_id)
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
    if req.filter is not None:  # only matching items: exact k results when k match (filtered_search)
        mask = compile_mask(idx, req.filter)
        if exclude is not None:
            mask[exclude] = False
        query.update(filter=req.filter.echo, matching=int(mask.sum()))
        found = filtered_search(idx, vec, req.k, mask, offset=req.offset, ef=req.ef, min_score=req.min_score)
        hits = found[0]
    elif exclude is None:
        hits = idx.search(vec, req.k, req.offset, ef=req.ef, min_score=req.min_score)[0]
    else:  # "more like this": the item itself is not a result
        hits = idx.search(vec, req.k + req.offset + 1, 0, ef=req.ef, min_score=req.min_score)[0]
        hits = [h for h in hits if h.label != exclude][req.offset : req.offset + req.k]
    loc = service.locator(idx)
    results = []
    for hit in hits:
        item = hit.item
        image_url, thumb_url = loc.urls(item, base)
        metadata = item.get("metadata")
        results.append(
            {
                "id": item.get("id"),
                "uri": loc.public_uri(item),
                "score": float(hit.score),
                "metadata": metadata if isinstance(metadata, dict) else {},
                "image_url": image_url,
                "thumbnail_url": thumb_url,
            }
        )
    return {"results": results, "query": query}


@router.post(
    "/search",
    summary="search the collection by text, image, vector or item id",
    response_model=None,
    responses={
        200: {"model": SearchResponse},
        404: {"model": ERROR_RESPONSES[400]["model"], "description": "unknown id"},
        **ERROR_RESPONSES,
    },
    openapi_extra=request_body(("application/json", SearchJSON), ("multipart/form-data", SearchForm)),
)
async def search(
    request: Request,
    req: Annotated[SearchRequest, Depends(parse_search)],  # dependencies resolve in order: 400s before 503s
    emb: Annotated[Embedder, Depends(get_embedder)],
    idx: Annotated[SearchIndex, Depends(get_index)],
    service: Annotated[Service, Depends(get_service)],
) -> JSONResponse:
    log = request.state.log
    log["index_version"] = idx.version
    body = await run_in_threadpool(run_search, req, emb, idx, service, base_path(request))
    log["results"] = len(body["results"])
    if req.type == "text":
        log["truncated"] = body["query"]["truncated"]
    body.update(
        model=service.state.model_id,
        index_version=idx.version,
        took_ms=round((time.perf_counter() - request.state.t0) * 1000, 3),
    )
    return JSONResponse(body)
