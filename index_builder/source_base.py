"""What every source shares: the item row, the :class:`Source` interface, the listing rules (image
extensions, hidden names, sidecars) and the capped local read.

Only image extensions (:data:`IMAGE_EXTENSIONS`) are listed; names starting with ``.`` (hidden files and
folders, temp files, a ``.work`` dir) are skipped. What a listing passes over is counted in
:attr:`Source.skipped` (by lower-case extension, ``hidden``, ``no extension``) so the build can report it.
Metadata comes from a sidecar ``<stem>.json`` next to the image. Reads stop at :attr:`Source.max_bytes`
(:class:`FileTooLargeError`), so a huge file is never read whole.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from handler.core.storage import TooLargeError, read_capped

__all__ = [
    "HIDDEN",
    "IMAGE_EXTENSIONS",
    "SIDECAR_SUFFIX",
    "FileTooLargeError",
    "Source",
    "SourceItem",
    "is_image_name",
    "parse_sidecar",
    "read_local",
    "run_parallel",
    "sidecar_name",
    "skip_kind",
    "too_large",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".ico")
SIDECAR_SUFFIX = ".json"
HIDDEN = "hidden"
NO_EXTENSION = "no extension"


@dataclass
class SourceItem:
    """One image of the source. ``error`` is set when listing already knows it cannot be read
    (a broken symlink, a missing object): ``(reason, message)``."""

    id: str | int
    uri: str
    size: int | None = None
    mtime: float | None = None
    etag: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: tuple[str, str] | None = None
    key: str | None = None  # the S3 key inside the source's store (S3 sources)


class FileTooLargeError(Exception):
    """An item's file is larger than the source's ``max_bytes``; it was not read (beyond the limit)."""


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def skip_kind(name: str) -> str:
    """The bucket a skipped file is counted in: ``hidden``, its lower-case extension, or ``no extension``."""
    if name.startswith("."):
        return HIDDEN
    suffix = PurePosixPath(name).suffix.lower()
    return suffix if suffix and suffix != "." else NO_EXTENSION


def sidecar_name(name: str) -> str:
    """``a/b.jpg`` -> ``a/b.json`` (plain string edit: keys like ``a//b.jpg`` are not normalised)."""
    head, _, last = name.rpartition("/")
    stem = last.rsplit(".", 1)[0] if "." in last.lstrip(".") else last
    return f"{head}/{stem}{SIDECAR_SUFFIX}" if head else stem + SIDECAR_SUFFIX


def _warn(msg: str) -> None:  # the default Source.warn
    logging.getLogger("index_builder.sources").warning(msg)


def parse_sidecar(raw: bytes, where: str, warn: Callable[[str], None]) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        warn(f"sidecar {where} is not valid JSON ({e}); indexing the image without metadata")
        return {}
    if not isinstance(meta, dict):
        warn(f"sidecar {where} is not a JSON object; indexing the image without metadata")
        return {}
    return meta


class Source:
    """Base class. ``uri`` is recorded in the index manifest."""

    uri: str
    warn: Callable[[str], None] = staticmethod(_warn)
    max_bytes: int | None = None  # read() raises FileTooLargeError beyond this many bytes
    skipped: Counter[str]  # set by list(): files passed over, by skip_kind

    def list(self) -> list[SourceItem]:
        raise NotImplementedError

    def read(self, item: SourceItem) -> bytes:
        raise NotImplementedError


def too_large(item: SourceItem, limit: int | None) -> FileTooLargeError:
    return FileTooLargeError(f"{item.uri} is larger than --max-file-bytes {limit}")


def read_local(path: str, item: SourceItem, limit: int | None) -> bytes:
    try:
        with open(path, "rb") as f:
            return read_capped(f, limit, path)
    except TooLargeError:
        raise too_large(item, limit) from None


def run_parallel(fn: Callable[[Any], Any], values: Iterable[Any], workers: int) -> list[Any]:
    """``[fn(v) for v in values]`` on up to ``workers`` threads (listing I/O: sidecars, stats)."""
    values = list(values)
    if len(values) <= 1 or workers <= 1:
        return [fn(v) for v in values]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="list") as ex:
        return list(ex.map(fn, values))
