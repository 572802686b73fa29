"""``GET /items/{id}/image`` and ``/items/{id}/thumbnail``: an item's local image file and a cached
thumbnail (see :mod:`handler.media` for which files are served)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from handler.core.errors import ArtifactError, SearchError
from handler.core.images import format_background
from handler.core.query import UnknownItemError, find_label
from handler.core.search import SearchIndex
from handler.deps import Service, get_index, get_service
from handler.media import ITEM_HEADERS, LocalImage
from handler.openapi import ERROR_RESPONSES

__all__ = ["router"]

router = APIRouter()
IndexDep = Annotated[SearchIndex, Depends(get_index)]
ServiceDep = Annotated[Service, Depends(get_service)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ERROR_RESPONSES[400]["model"]}}


def local_image(item_id: str, idx: SearchIndex, service: Service) -> LocalImage:
    label = find_label(idx, item_id)
    if label is None:
        raise UnknownItemError(f"no item with id {item_id[:200]!r} in index version {idx.version}")
    found = service.locator(idx).local_file(idx.items[label])
    if found is None:
        raise UnknownItemError(f"item {item_id[:200]!r} has no image served by this service")
    return found


@router.get(
    "/items/{item_id:path}/image",
    summary="the item's image file (local collections)",
    response_class=Response,
    responses=_NOT_FOUND,
)
def item_image(item_id: str, idx: IndexDep, service: ServiceDep) -> Response:
    found = local_image(item_id, idx, service)
    return FileResponse(
        found.path,
        media_type=found.media_type,
        headers={"cache-control": "public, max-age=3600", **ITEM_HEADERS},
    )


@router.get(
    "/items/{item_id:path}/thumbnail",
    summary="a small JPEG/PNG of the item's image (cached)",
    response_class=Response,
    responses=_NOT_FOUND,
)
def item_thumbnail(item_id: str, request: Request, idx: IndexDep, service: ServiceDep) -> Response:
    found = local_image(item_id, idx, service)
    background = idx.image_options.background
    etag = f'{found.etag[:-1]}-{format_background(background).lstrip("#")}"'  # the file and its background
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"etag": etag, **ITEM_HEADERS})
    # whatever the builder indexed can be shown: its pixel limit when above the service's
    built = (idx.manifest.get("build") or {}).get("max_pixels")
    thumbnails = service.thumbnails
    limit = thumbnails.max_pixels
    if limit is not None and isinstance(built, int) and not isinstance(built, bool):
        limit = max(limit, built)
    try:
        data, media = thumbnails.get(found, background, limit)
    except SearchError as e:
        raise ArtifactError(f"item {item_id[:200]!r}: its image cannot be read ({e.message})") from None
    except OSError as e:
        raise ArtifactError(f"item {item_id[:200]!r}: its image cannot be read ({e.strerror or e})") from None
    return Response(
        data,
        media_type=media,
        headers={"cache-control": "public, max-age=3600", "etag": etag, **ITEM_HEADERS},
    )
