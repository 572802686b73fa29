"""What the builder records about each image besides its vector, for search filters (docs/formats.md):

* from the file's content (:func:`content_facts`, the header of the bytes already read for hashing; no
  pixel is decoded, nothing is read again): ``type`` (MIME of the decoded format), ``camera`` (EXIF Make +
  Model), ``gps`` (whether EXIF holds GPS information) and the EXIF ``DateTimeOriginal``;
* from the listing (:func:`row_facts`): ``ext`` (lower-case extension of the name) and ``taken_at``: the
  EXIF date as ISO 8601 (``taken_at_source: "exif"``), else the file's mtime in UTC (``"mtime"``).

Content facts travel with an item whose vector is reused: read back from its previous row
(:func:`previous_content`). A row of an index built before these fields has none; filters on a field an
item lacks do not match it.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from typing import Any

from PIL import Image

from handler.core.images import ALLOWED_FORMATS
from index_builder.itemwarnings import capture_item_warnings

__all__ = ["content_facts", "previous_content", "row_facts"]

_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_MAKE, _MODEL = 0x010F, 0x0110
_DATETIME_ORIGINAL, _OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
_EXIF_DATE = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"[+-]\d{2}:\d{2}")
_MAX_TEXT = 128  # a camera name longer than this is cut (rows stay small)
EXIF_TAKEN = "exif_taken"  # content_facts key of the EXIF date (in rows: taken_at + taken_at_source)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return " ".join(str(value).replace("\x00", " ").split())[:_MAX_TEXT] if value is not None else ""


def _exif_date(value: Any, offset: Any) -> str | None:
    """``2024:05:01 12:30:00`` (+ ``OffsetTimeOriginal``) -> ``2024-05-01T12:30:00[+02:00]``; None when it
    is not a valid date (cameras write ``0000:00:00 00:00:00`` when unset)."""
    m = _EXIF_DATE.match(_text(value))
    if m is None:
        return None
    try:
        year, month, day, hour, minute, second = map(int, m.groups())
        dt = datetime(year, month, day, hour, minute, second)  # naive: EXIF times are local to the camera
    except ValueError:
        return None
    text = dt.isoformat()
    off = _text(offset)
    return text + off if _OFFSET.fullmatch(off) else text


def content_facts(data: bytes) -> dict[str, Any]:
    """``type``, ``camera``, ``gps`` and ``exif_taken`` of an image from its header; ``{}`` when the
    header cannot be parsed. Warnings are dropped: the decode of the same bytes reports them."""
    facts: dict[str, Any] = {"gps": False}  # always set: marks a row whose content facts were extracted
    with capture_item_warnings():
        try:
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
                mime = Image.MIME.get(img.format or "")
                if mime:
                    facts["type"] = mime
                # a PNG's EXIF after its pixel data would need a full decode (Pillow loads it): not read
                exif = img.getexif() if img.format != "PNG" or "exif" in img.info else Image.Exif()
                camera = " ".join(t for t in (_text(exif.get(_MAKE)), _text(exif.get(_MODEL))) if t)
                if camera:
                    facts["camera"] = camera[:_MAX_TEXT]
                facts["gps"] = bool(exif.get_ifd(_GPS_IFD))
                sub = exif.get_ifd(_EXIF_IFD)
                taken = _exif_date(sub.get(_DATETIME_ORIGINAL), sub.get(_OFFSET_TIME_ORIGINAL))
                if taken:
                    facts[EXIF_TAKEN] = taken
        except Exception:  # a header Pillow cannot parse: the decode reports it (or the vector is reused)
            return facts
    return facts


def _ext(item_id: Any, uri: str) -> str | None:
    name = (item_id if isinstance(item_id, str) else uri).rsplit("/", 1)[-1]
    if "." not in name.lstrip("."):
        name = uri.rsplit("/", 1)[-1]
        if "." not in name.lstrip("."):
            return None
    ext = name.rsplit(".", 1)[1].lower()
    return ext if 0 < len(ext) <= 16 else None


def row_facts(item_id: Any, uri: str, mtime: float | None, content: dict[str, Any] | None) -> dict[str, Any]:
    """The fields an items.jsonl row gets (absent ones are left out): ext, type, taken_at,
    taken_at_source, camera, gps."""
    out: dict[str, Any] = {}
    ext = _ext(item_id, uri)
    if ext:
        out["ext"] = ext
    content = content or {}
    for key in ("type", "camera"):
        if content.get(key):
            out[key] = content[key]
    if content.get(EXIF_TAKEN):
        out["taken_at"], out["taken_at_source"] = content[EXIF_TAKEN], "exif"
    elif mtime is not None:
        try:
            out["taken_at"] = datetime.fromtimestamp(int(mtime), UTC).isoformat().replace("+00:00", "Z")
            out["taken_at_source"] = "mtime"
        except (OverflowError, OSError, ValueError):
            pass
    if "gps" in content:
        out["gps"] = bool(content["gps"])
    return out


def previous_content(row: dict[str, Any]) -> dict[str, Any] | None:
    """The content facts a previous row holds (None: a row from before these fields: none known)."""
    if "gps" not in row:
        return None
    out: dict[str, Any] = {k: row[k] for k in ("type", "camera", "gps") if k in row}
    if row.get("taken_at_source") == "exif" and isinstance(row.get("taken_at"), str):
        out[EXIF_TAKEN] = row["taken_at"]
    return out
