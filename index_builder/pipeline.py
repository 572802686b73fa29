"""Parallel read + hash + decode + preprocess feeding the encoder in batches, in source order.

``workers`` threads run :func:`prepare` (read the bytes - never more than the source's ``max_bytes`` -,
sha256 them, skip decoding when the content's vector is already known, else decode + preprocess with the
torch-free :class:`ImagePreprocessor`). Warnings raised while preparing an item (Pillow's "Corrupt EXIF
data"...) are recorded on that item (:mod:`index_builder.itemwarnings`), not printed anonymously.
Messages never quote file content (:func:`safe_message`).
PIL, hashlib and onnxruntime release the GIL, so decoding overlaps inference. At most ``ahead`` items are
in flight (bounded memory); results are consumed in submission order and batches are formed in that order,
so the output does not depend on thread timing.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from handler.core.errors import ImageTooLargeError, InvalidImageError
from handler.core.images import image_size
from handler.core.storage import NotFoundError, StorageError
from index_builder.facts import content_facts
from index_builder.itemwarnings import capture_item_warnings
from index_builder.source_base import FileTooLargeError, Source, SourceItem
from index_builder.workdir import CachedVector

__all__ = ["Prepared", "classify", "error_row", "prepare", "prepared_stream", "safe_message"]

_BYTES_LITERAL = re.compile(r"""\bb(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


def safe_message(message: str) -> str:
    """A message with any quoted bytes (``b'root:x:0'``, a decoder echoing a file's header) elided: errors
    and warnings name files, never their content."""
    return _BYTES_LITERAL.sub("b'...'", message)


def error_row(item: SourceItem, reason: str, message: str) -> dict[str, Any]:
    """An ``errors.jsonl`` row (serial and step-wise builds alike); size/mtime/etag let the next step-wise
    plan skip the same unchanged broken file without reading it."""
    row: dict[str, Any] = {
        "id": item.id,
        "uri": item.uri,
        "reason": reason,
        "message": safe_message(message),
        "size": item.size,
        "mtime": item.mtime,
    }
    if item.etag is not None:
        row["etag"] = item.etag
    return row


@dataclass
class Prepared:
    """One item after the worker: either an error, or its content hash plus (when the vector is not known
    yet) the preprocessed pixels."""

    position: int
    item: SourceItem
    sha256: str | None = None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    pixels: np.ndarray | None = None
    cached: CachedVector | None = None
    error: tuple[str, str] | None = None
    warnings: list[str] | None = None
    facts: dict[str, Any] | None = None  # content facts for the row (index_builder.facts)


def classify(exc: BaseException) -> tuple[str, str]:
    """``(reason, message)`` of an image that cannot be indexed. Reasons: ``empty``, ``truncated``,
    ``not_an_image``, ``corrupt``, ``too_large``, ``unreadable`` (and, set elsewhere, ``file_too_large``,
    ``outside_root``, ``invalid_key``)."""
    if isinstance(exc, ImageTooLargeError):
        return "too_large", exc.message
    if isinstance(exc, InvalidImageError):
        msg = exc.message
        low = msg.lower()
        if "empty image data" in low:
            return "empty", msg
        if "truncated" in low:
            return "truncated", msg
        if "not a recognised image" in low:
            return "not_an_image", msg
        return "corrupt", msg
    if isinstance(exc, MemoryError):
        return "too_large", "not enough memory to decode the image"
    return "corrupt", f"{type(exc).__name__}: {exc}"


def prepare(
    position: int,
    item: SourceItem,
    source: Source,
    preprocessor: Any,
    known: Callable[[str], CachedVector | None],
) -> Prepared:
    with capture_item_warnings() as caught:
        out = _prepare(position, item, source, preprocessor, known)
    if caught:
        out.warnings = [safe_message(w) for w in caught]
    if out.error is not None:
        out.error = (out.error[0], safe_message(out.error[1]))
    return out


def _prepare(
    position: int,
    item: SourceItem,
    source: Source,
    preprocessor: Any,
    known: Callable[[str], CachedVector | None],
) -> Prepared:
    out = Prepared(position, item)
    limit = source.max_bytes
    if limit is not None and item.size is not None and item.size > limit:  # known from the listing: not read
        out.error = ("file_too_large", f"{item.size} bytes, over --max-file-bytes {limit}")
        return out
    try:
        data = source.read(item)
    except FileTooLargeError:
        out.error = ("file_too_large", f"over --max-file-bytes {limit}")
        return out
    except StorageError as e:
        if not isinstance(e, NotFoundError):
            raise  # the storage failed (network, credentials): abort the build rather than skip everything
        out.error = ("unreadable", f"cannot read {item.uri}: {e.message}")
        return out
    except Exception as e:
        reason = getattr(e, "strerror", None) or getattr(e, "message", None) or str(e) or type(e).__name__
        out.error = ("unreadable", f"cannot read {item.uri}: {reason}")
        return out
    out.size = len(data)
    if not data:
        out.error = ("empty", "zero-byte file")
        return out
    out.sha256 = hashlib.sha256(data).hexdigest()
    out.facts = content_facts(data)  # header only, from the bytes in hand (cached vectors too)
    hit = known(out.sha256)
    max_pixels = getattr(preprocessor, "max_pixels", None)
    if (
        hit is not None
        and hit.width is not None
        and hit.height is not None
        and (max_pixels is None or hit.width * hit.height <= max_pixels)
    ):
        out.cached, out.width, out.height = hit, hit.width, hit.height
        return out
    try:
        img = preprocessor.load(data)
        out.width, out.height = image_size(
            img
        )  # the full size, also when a JPEG was decoded at reduced scale
        out.pixels = preprocessor(img)
    except Exception as e:
        out.error = classify(e)
        out.pixels = None
    return out


def prepared_stream(
    items: Sequence[SourceItem],
    source: Source,
    preprocessor: Any,
    known: Callable[[str], CachedVector | None],
    *,
    workers: int,
    ahead: int,
) -> Iterator[Prepared]:
    """:func:`prepare` over ``items`` on ``workers`` threads, yielded in order, ``ahead`` in flight."""
    if workers <= 1:
        for i, item in enumerate(items):
            yield prepare(i, item, source, preprocessor, known)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as ex:
        pending: deque[Future[Prepared]] = deque()
        it = iter(enumerate(items))
        try:
            for i, item in it:
                pending.append(ex.submit(prepare, i, item, source, preprocessor, known))
                if len(pending) >= ahead:
                    break
            while pending:
                result = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(ex.submit(prepare, nxt[0], nxt[1], source, preprocessor, known))
                yield result
        finally:
            for fut in pending:
                fut.cancel()
