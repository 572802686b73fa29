"""``POST /search``: by text, image, vector, item id or a weighted combination of them (``terms``).

The route reads the raw request because one path takes three kinds of body (JSON, a form with an image
file, a raw ``image/*`` body); each is validated by the models of :mod:`handler.schemas`."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from handler import bodies
from handler.core import dedupe
from handler.core.errors import ImageTooLargeError, InvalidImageError
from handler.core.filtered_search import FilteredIndex
from handler.core.filters import compile_mask
from handler.core.query import embed_terms
from handler.core.runtime import Embedder
from handler.core.search import SearchIndex
from handler.deps import Service, base_path, form, get_embedder, get_index, get_service, read_body
from handler.fields import check_pixel_budget
from handler.openapi import ERROR_RESPONSES, request_body
from handler.request import SearchRequest
from handler.request_errors import UnsupportedMediaTypeError
from handler.response_models import SearchResponse
from handler.responses import JSONResponse
from handler.schemas import SearchForm, SearchJSON
from handler.validation import validate

__all__ = ["router"]

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
    mt = bodies.media_type(request.headers.get("content-type"))
    if _is_json(mt):
        body = await read_body(request, limit)
        # parsing, validation and base64 decoding are CPU-bound: off the event loop
        return await run_in_threadpool(lambda: validate(SearchJSON, bodies.parse_json(body)).query(max_bytes))
    if mt in ("multipart/form-data", "application/x-www-form-urlencoded"):
        body = await read_body(request, limit)
        async with form(request, body, limit) as parsed:
            fields = await bodies.read_form(parsed, max_bytes)
        return await run_in_threadpool(lambda: validate(SearchForm, fields).query(max_bytes))
    if mt.startswith("image/"):
        body = await read_body(request, limit)
        if len(body) > max_bytes:
            raise ImageTooLargeError(f"image is {len(body)} bytes, over the limit of {max_bytes} bytes")
        if not body:
            raise InvalidImageError("empty request body: expected image bytes")
        params = {**bodies.numbers(request.query_params), "image": body}
        if request.query_params.get("filter"):
            params["filter"] = request.query_params["filter"]
        return validate(SearchForm, params).query(max_bytes)
    raise UnsupportedMediaTypeError(
        f"unsupported content type {mt or '(none)'!r}: send application/json, multipart/form-data "
        "(an 'image' file or a 'text' field) or an image/* body"
    )


def run_search(
    req: SearchRequest, emb: Embedder, idx: SearchIndex, service: Service, base: str
) -> dict[str, Any]:
    terms = req.query_terms()
    images = [t.value for t in terms if t.kind == "image"]
    if images:
        check_pixel_budget(images, service.max_request_pixels, emb.max_pixels)
    q = embed_terms(terms, idx, emb, req.language)
    if req.terms is None:  # a single-term form: described as before compound queries
        query: dict[str, Any] = {k: v for k, v in q.terms[0].items() if k != "weight"}
    else:
        query = {"type": "terms", "terms": q.terms}
    query.update(k=req.k, offset=req.offset)
    for name in ("min_score", "ef", "dedupe"):
        if getattr(req, name) is not None:
            query[name] = getattr(req, name)
    target: SearchIndex | FilteredIndex = idx
    exclude = q.exclude
    if req.filter is not None:  # only matching items: exact k results when k match (filtered_search)
        mask = compile_mask(idx, req.filter)
        mask[list(exclude)] = False
        query.update(filter=req.filter.echo, matching=int(mask.sum()))
        target, exclude = FilteredIndex(idx, mask), frozenset()
    ranked = dedupe.ranked(
        target,
        q.vector,
        req.k,
        req.offset,
        ef=req.ef,
        min_score=req.min_score,
        exclude=exclude,
        dedupe=req.dedupe,
        kind=q.kind,
    )
    loc = service.locator(idx)
    results = []
    for hit, absorbed in ranked:
        item = hit.item
        image_url, thumb_url = loc.urls(item, base)
        metadata = item.get("metadata")
        result = {
            "id": item.get("id"),
            "uri": loc.public_uri(item),
            "score": float(hit.score),
            "metadata": metadata if isinstance(metadata, dict) else {},
            "image_url": image_url,
            "thumbnail_url": thumb_url,
        }
        if req.dedupe is not None:
            result["duplicates"] = [d.item.get("id") for d in absorbed]
        results.append(result)
    return {"results": results, "query": query}


@router.post(
    "/search",
    summary="search the collection by text, image, vector, item id or weighted terms",
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
