"""Item images: where an item's image is, URLs for results, safe local file access, thumbnails.

An item's ``uri`` (``items.jsonl``) is one of

* ``s3://bucket/key``: results carry presigned GET URLs (``PRESIGN_EXPIRY_SECONDS``);
* ``http(s)://...``: passed through as is;
* a local path (absolute, ``file://``, or relative to the collection root): served by the app under
  ``/items/{id}/image`` and ``/items/{id}/thumbnail``.

Results never show where the collection lives: their ``uri`` is :meth:`ImageLocator.public_uri`, the path
relative to the index's source (local folder or ``s3://`` prefix; no server path, no bucket name), the
``http(s)`` URL as is, or null for anything else.

The collection root is ``COLLECTION_ROOT`` when set, else the index manifest's ``source``. A local file is
served only if it resolves (symlinks included) to a regular file under that root; an absolute ``uri``
outside the manifest's ``source`` is never served. With ``COLLECTION_ROOT`` set, absolute paths under the
manifest's ``source`` are re-rooted there (an index built on another machine).
"""

from __future__ import annotations

import io
import os
import re
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from handler.core.errors import ConfigError
from handler.core.uri import is_s3, parse_uri

__all__ = ["ITEM_HEADERS", "ImageLocator", "LocalImage", "ThumbnailCache", "item_id_path", "sniff_raster"]

THUMBNAIL_SIZE = 256
THUMBNAIL_CACHE_BYTES = 32 * 1024 * 1024
SERVABLE_CACHE_ENTRIES = 100_000
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
#: Headers of every item image response: the bytes are the collection's, not the service's; even a
#: mis-sniffed file can never run script on the service's origin.
ITEM_HEADERS = {"x-content-type-options": "nosniff", "content-security-policy": "sandbox"}
SNIFF_BYTES = 16


def sniff_raster(head: bytes) -> str | None:
    """The media type of a raster image from its first bytes (JPEG, PNG, GIF, WebP, BMP, TIFF), else None.
    The extension is never trusted: an ``.svg`` (or HTML) renamed or replaced after indexing is not served."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:2] == b"BM" and len(head) >= 14:
        return "image/bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return None


def item_id_path(item_id: Any) -> str:
    """The id as URL path text (reserved characters escaped; "/" kept: the routes take ids with slashes)."""
    return quote(str(item_id), safe="/")


@dataclass(frozen=True)
class LocalImage:
    """A servable local image file: resolved ``path``, ``media_type``, ``size``, ``mtime_ns``."""

    path: Path
    media_type: str
    size: int
    mtime_ns: int

    @property
    def etag(self) -> str:
        return f'"{self.size:x}-{self.mtime_ns:x}"'


def _local_path_of(value: str) -> str | None:
    """A local filesystem path for a path / ``file://`` string, or None (s3, http, other schemes)."""
    if not _SCHEME.match(value):
        return value
    try:
        loc = parse_uri(value, check_s3_key=False)
    except ConfigError:
        return None
    return None if loc.is_s3 else loc.path


def _within(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives / mix of absolute and relative
        return False


class ImageLocator:
    """Resolves items of one index version to URLs and local files (see the module docstring)."""

    def __init__(self, source: Any, collection_root: str | None, presign_expiry: int = 3600):
        self.source = source if isinstance(source, str) and source else None
        self.override = collection_root
        self.presign_expiry = presign_expiry
        src_local = _local_path_of(self.source) if self.source else None
        self._source_local = os.path.normpath(src_local) if src_local and os.path.isabs(src_local) else None
        root = collection_root or self.source
        root_local = _local_path_of(root) if root else None
        self.root = os.path.realpath(root_local) if root_local else None
        if self.root is not None and os.path.isfile(self.root):  # a JSONL manifest source: its folder
            self.root = os.path.dirname(self.root)
        base = self._source_local
        self._public_base = os.path.dirname(base) if base is not None and os.path.isfile(base) else base
        s3_base = self.source.rstrip("/") if self.source and is_s3(self.source) else None
        if s3_base is not None and s3_base.lower().endswith(".jsonl"):  # a JSONL manifest: its "folder"
            s3_base = s3_base.rsplit("/", 1)[0]
        self._s3_prefix = s3_base + "/" if s3_base is not None else None
        self._s3 = None
        self._s3_lock = threading.Lock()
        self._servable_cache: dict[tuple[Any, Any], bool] = {}

    # -- URLs for results -----------------------------------------------------------------------------------
    def urls(self, item: dict[str, Any], base: str = "") -> tuple[str | None, str | None]:
        """(image_url, thumbnail_url) for a search result."""
        uri = item.get("uri")
        if isinstance(uri, str) and is_s3(uri):
            url = self.presign(uri)
            return url, url
        if isinstance(uri, str) and uri.startswith(("http://", "https://")):
            return uri, uri
        if "id" not in item or not self._servable(item):
            return None, None
        seg = item_id_path(item["id"])
        return f"{base}/items/{seg}/image", f"{base}/items/{seg}/thumbnail"

    def public_uri(self, item: dict[str, Any]) -> str | None:
        """The item's ``uri`` as results show it: relative to the index's source (a server path or a bucket
        name is internal), an ``http(s)`` URL unchanged, else None."""
        uri = item.get("uri")
        if not isinstance(uri, str) or not uri or "\x00" in uri:
            return None
        if uri.startswith(("http://", "https://")):
            return uri
        if is_s3(uri):
            prefix = self._s3_prefix
            if prefix is None or not uri.startswith(prefix):
                return None
            return uri[len(prefix) :] or None
        path = _local_path_of(uri)
        if path is None:
            return None
        if not os.path.isabs(path):
            norm = os.path.normpath(path)
            return None if norm == ".." or norm.startswith("../") else norm.replace(os.sep, "/")
        norm = os.path.normpath(path)
        if self._public_base is None or not _within(norm, self._public_base) or norm == self._public_base:
            return None
        return os.path.relpath(norm, self._public_base).replace(os.sep, "/")

    def result(self, item: dict[str, Any], score: float, base: str = "") -> dict[str, Any]:
        """An item as results show it (``response_models.Result``): id, public uri, score, metadata, URLs."""
        image_url, thumb_url = self.urls(item, base)
        metadata = item.get("metadata")
        return {
            "id": item.get("id"),
            "uri": self.public_uri(item),
            "score": float(score),
            "metadata": metadata if isinstance(metadata, dict) else {},
            "image_url": image_url,
            "thumbnail_url": thumb_url,
        }

    def _servable(self, item: dict[str, Any]) -> bool:
        """Cached :meth:`local_file` check for result URLs (the item routes always re-check)."""
        key = (item.get("id"), item.get("uri"))
        try:
            return self._servable_cache[key]
        except (KeyError, TypeError):
            pass
        ok = self.local_file(item) is not None
        try:
            if len(self._servable_cache) >= SERVABLE_CACHE_ENTRIES:
                self._servable_cache.clear()
            self._servable_cache[key] = ok
        except TypeError:  # unhashable id / uri
            pass
        return ok

    def presign(self, uri: str) -> str | None:
        try:
            loc = parse_uri(uri, check_s3_key=False)
        except ConfigError:
            return None
        bucket, key = loc.bucket, loc.key
        if not loc.is_s3 or not key:
            return None
        try:
            return self._s3_client().generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.presign_expiry
            )
        except Exception:  # no credentials / bad bucket name: no URL rather than a failed search
            return None

    def _s3_client(self) -> Any:
        """The storage layer's client (SigV4, region and endpoint from the environment), used for signing
        only: no request is sent."""
        if self._s3 is None:
            with self._s3_lock:
                if self._s3 is None:
                    from handler.core.storage import s3_client

                    self._s3 = s3_client()
        return self._s3

    # -- local files ----------------------------------------------------------------------------------------
    def local_file(self, item: dict[str, Any]) -> LocalImage | None:
        """The item's image as a safe local file, or None when it is not one (or not under the root)."""
        uri = item.get("uri")
        if self.root is None or not isinstance(uri, str) or not uri or "\x00" in uri:
            return None
        path = _local_path_of(uri)
        if path is None:
            return None
        if os.path.isabs(path):
            norm = os.path.normpath(path)
            if (
                self.override is not None
                and self._source_local is not None
                and _within(norm, self._source_local)
            ):
                candidate = os.path.realpath(
                    os.path.join(self.root, os.path.relpath(norm, self._source_local))
                )
            else:
                candidate = os.path.realpath(norm)
        else:
            candidate = os.path.realpath(os.path.join(self.root, path))
        if not _within(candidate, self.root):
            return None
        try:
            st = os.stat(candidate)
            if not stat.S_ISREG(st.st_mode):  # before open(): opening a FIFO would block
                return None
            with open(candidate, "rb") as f:
                media_type = sniff_raster(f.read(SNIFF_BYTES))
        except OSError:
            return None
        if media_type is None:
            return None
        return LocalImage(Path(candidate), media_type, st.st_size, st.st_mtime_ns)


class ThumbnailCache:
    """JPEG/PNG thumbnails (longest side ``size``) in a byte-bounded, thread-safe in-memory LRU.

    Transparent images are composited over ``background`` (the index's, so a thumbnail shows what the
    model saw; None keeps the alpha channel: a PNG). Large JPEGs are decoded at reduced scale."""

    def __init__(
        self,
        size: int = THUMBNAIL_SIZE,
        max_bytes: int = THUMBNAIL_CACHE_BYTES,
        max_pixels: int | None = None,
    ):
        self.size = size
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self._items: OrderedDict[tuple[Any, ...], tuple[bytes, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(
        self,
        image: LocalImage,
        background: tuple[int, int, int] | None = (255, 255, 255),
        max_pixels: int | None = None,
    ) -> tuple[bytes, str]:
        """(thumbnail bytes, media type). ``max_pixels`` (default: the cache's) is the decoding limit.
        Raises InvalidImageError / ImageTooLargeError for bad files."""
        key = (str(image.path), image.size, image.mtime_ns, background)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return hit
            self.misses += 1
        value = self._render(image.path, background, self.max_pixels if max_pixels is None else max_pixels)
        with self._lock:
            if key not in self._items:
                self._items[key] = value
                self._bytes += len(value[0])
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, (data, _) = self._items.popitem(last=False)
                self._bytes -= len(data)
        return value

    def _draft(self, size: tuple[int, int]) -> tuple[int, int] | None:
        """JPEG decode scale: at least twice the thumbnail (as PIL's own ``thumbnail`` drafts)."""
        scale = 2 * self.size / max(size)
        return (max(1, round(size[0] * scale)), max(1, round(size[1] * scale))) if scale < 1 else None

    def _render(
        self, path: Path, background: tuple[int, int, int] | None, max_pixels: int | None
    ) -> tuple[bytes, str]:
        from PIL import Image

        from handler.core.images import decode_image, flatten

        with open(path, "rb") as f:
            data = f.read()
        # no aspect-ratio cap: an indexed file passed the builder's, and a thumbnail never upsamples
        img = flatten(decode_image(data, max_pixels, max_aspect=None, draft=self._draft), background)
        if img.mode not in ("RGB", "RGBA", "L", "LA"):
            img = img.convert("RGBA" if "transparency" in img.info or img.mode.endswith("A") else "RGB")
        img.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        if img.mode in ("RGBA", "LA"):
            img.save(out, format="PNG", optimize=True)
            return out.getvalue(), "image/png"
        img.save(out, format="JPEG", quality=85)
        return out.getvalue(), "image/jpeg"
