"""``GET /duplicates``: the near-duplicate groups the builder found in the current index version, a page
at a time (docs/api.md). The version's ``duplicates.jsonl`` is read on the first request, not when the
index loads (downloaded into the index cache for S3 indexes), and kept as long as the version is served.
A version built without the duplicate finder answers ``available: false`` with no groups."""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from handler.core.duplicates import DUPLICATES_FILE, read_duplicates
from handler.core.errors import ArtifactError
from handler.core.index_format import version_prefix
from handler.core.search import SearchIndex
from handler.core.storage import LocalStore, file_digest, open_store
from handler.deps import Service, base_path, get_index, get_service
from handler.openapi import ERROR_RESPONSES
from handler.response_models import DuplicatesResponse
from handler.responses import JSONResponse

__all__ = ["MAX_LIMIT", "MAX_PER_GROUP", "router", "version_duplicates"]

router = APIRouter()
MAX_LIMIT = 100  # groups per page
MAX_PER_GROUP = 100  # items shown per group (a near-constant collection is one huge group)
MAX_OFFSET = 10_000_000

_cache: weakref.WeakKeyDictionary[SearchIndex, list[dict[str, Any]]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _local_file(idx: SearchIndex, index_uri: str | None, entry: dict[str, Any]) -> Path:
    """The version's duplicates file on local disk, downloaded (and checked) when it is not there yet."""
    where = f"index version {idx.version}: {DUPLICATES_FILE}"
    if idx.files_dir is None:
        raise ArtifactError(f"{where}: the version's files are not on local disk")
    path = idx.files_dir / DUPLICATES_FILE
    if not (path.is_file() and file_digest(path) == (entry["sha256"], entry["size"])):
        if index_uri is None:
            raise ArtifactError(f"{where} is missing")
        store = open_store(index_uri)
        if isinstance(store, LocalStore):  # read in place: there is no other copy
            raise ArtifactError(f"{where} is missing or does not match the manifest")
        try:
            store.download_file(version_prefix(idx.version) + DUPLICATES_FILE, path)
        except FileNotFoundError:
            raise ArtifactError(f"{where} is missing from {store.uri}") from None
        if file_digest(path) != (entry["sha256"], entry["size"]):
            path.unlink(missing_ok=True)
            raise ArtifactError(f"{where} does not match the manifest's size / sha256")
    return path


def version_duplicates(idx: SearchIndex, index_uri: str | None) -> list[dict[str, Any]] | None:
    """The groups of ``idx``'s version (read once per loaded version), or None when it has none."""
    entry = idx.manifest["files"].get(DUPLICATES_FILE)
    if entry is None:
        return None
    with _lock:  # the first request reads (or downloads) the file, the others wait for it
        groups = _cache.get(idx)
        if groups is None:
            groups = read_duplicates(_local_file(idx, index_uri, entry))
            _cache[idx] = groups
    return groups


def _page(
    idx: SearchIndex, groups: list[dict[str, Any]], service: Service, base: str, per_group: int
) -> list[dict[str, Any]]:
    loc = service.locator(idx)
    page = []
    for g in groups:
        items = []
        for item_id, score in zip(g["items"][:per_group], g["scores"][:per_group], strict=True):
            label = idx.label_for(item_id)
            if label is None:
                raise ArtifactError(
                    f"index version {idx.version}: {DUPLICATES_FILE} names unknown id {item_id!r}"
                )
            items.append(loc.result(idx.items[label], score, base))
        page.append({"count": len(g["items"]), "score": float(g["score"]), "items": items})
    return page


@router.get(
    "/duplicates",
    summary="near-duplicate groups of the whole collection, found when the index was built (paginated)",
    response_model=None,
    responses={200: {"model": DuplicatesResponse}, **ERROR_RESPONSES},
)
def duplicates(
    request: Request,
    idx: Annotated[SearchIndex, Depends(get_index)],
    service: Annotated[Service, Depends(get_service)],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="groups per page")] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="skip this many groups")] = 0,
    per_group: Annotated[
        int, Query(ge=1, le=MAX_PER_GROUP, description="items shown per group (its count is always given)")
    ] = 20,
) -> JSONResponse:
    settings = service.state.settings
    groups = version_duplicates(idx, settings.index_uri if settings is not None else None)
    setting = idx.manifest.get("duplicates") if groups is not None else None
    setting = setting if isinstance(setting, dict) else {}
    request.state.log["index_version"] = idx.version
    page = groups[offset : offset + limit] if groups is not None else []
    body = {
        "available": groups is not None,
        "version": idx.version,
        "threshold": setting.get("threshold"),
        "k": setting.get("k"),
        "total": len(groups) if groups is not None else 0,
        "limit": limit,
        "offset": offset,
        "groups": _page(idx, page, service, base_path(request), per_group),
    }
    return JSONResponse(body)
