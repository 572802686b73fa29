"""An ``s3://bucket/prefix``: ids are keys relative to the prefix; sidecars are read in parallel. A key
that is not a safe relative path (an empty, ``.`` or ``..`` segment) is an item error, not an abort."""

from __future__ import annotations

from collections import Counter
from pathlib import PurePosixPath

from handler.core.storage import NotFoundError, S3Store, TooLargeError
from index_builder.errors import BuildError
from index_builder.source_base import (
    HIDDEN,
    SIDECAR_SUFFIX,
    Source,
    SourceItem,
    is_image_name,
    parse_sidecar,
    run_parallel,
    sidecar_name,
    skip_kind,
    too_large,
)

__all__ = ["S3Source"]


def bad_key(key: str) -> bool:
    """An S3 key with an empty, '.' or '..' segment: legal in S3, but not a safe relative path (id, uri)."""
    return any(p in ("", ".", "..") for p in key.split("/"))


class S3Source(Source):
    def __init__(self, store: S3Store, workers: int = 8):
        self.store = store
        self.uri = store.uri
        self.workers = workers
        self.skipped = Counter()

    def list(self) -> list[SourceItem]:
        try:
            objects = list(self.store.list(""))
        except NotFoundError as e:
            raise BuildError(f"--source {self.uri}: {e}; check the bucket name") from None
        keys = {o.key for o in objects}
        sidecars = {sidecar_name(k) for k in keys if is_image_name(k)}
        self.skipped = Counter()
        items: list[SourceItem] = []
        for obj in objects:
            name = obj.key.rsplit("/", 1)[-1]
            if any(part.startswith(".") and part not in (".", "..") for part in obj.key.split("/")):
                self.skipped[HIDDEN] += 1
                continue
            if not is_image_name(name):
                if obj.key not in sidecars:
                    self.skipped[skip_kind(name)] += 1
                continue
            if bad_key(obj.key):  # cannot be an id / uri the service resolves: an error, not an abort
                uri = f"{self.uri}/{obj.key}"
                items.append(
                    SourceItem(
                        id=obj.key,
                        uri=uri,
                        size=obj.size,
                        mtime=obj.mtime,
                        etag=obj.etag,
                        error=(
                            "invalid_key",
                            f"{uri}: the key has an empty, '.' or '..' segment; "
                            "rename the object to index it",
                        ),
                    )
                )
                continue
            items.append(
                SourceItem(
                    id=obj.key,
                    uri=self.store.uri_for(obj.key),
                    size=obj.size,
                    mtime=obj.mtime,
                    etag=obj.etag,
                    key=obj.key,
                )
            )
        items.sort(key=lambda it: str(it.id))

        def sidecar(item: SourceItem) -> None:
            if item.error is not None:
                return
            key = str(PurePosixPath(item.key or "").with_suffix(SIDECAR_SUFFIX))
            if key not in keys:
                return
            try:
                item.metadata = parse_sidecar(self.store.read_bytes(key), self.store.uri_for(key), self.warn)
            except NotFoundError:  # deleted since the listing
                self.warn(f"sidecar {self.store.uri_for(key)} disappeared; indexing without metadata")

        run_parallel(sidecar, items, self.workers)
        return items

    def read(self, item: SourceItem) -> bytes:
        assert item.key is not None
        try:
            return self.store.read_bytes(item.key, max_bytes=self.max_bytes)
        except TooLargeError:
            raise too_large(item, self.max_bytes) from None
