"""How a build compares with DEST's current version, one rule for the serial build and the planned one: the
manifest settings that must match for "no change", the image options the vectors were made with, and the
current version's error rows (trusted only when their checksum matches)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from handler.core.errors import SearchError
from handler.core.images import ImageOptions, format_background
from handler.core.index_format import ERRORS_FILE, SCHEMA_VERSION, version_prefix
from handler.core.storage import Store
from index_builder.shard_write import same_recall_settings

__all__ = [
    "VOLATILE_FIELDS",
    "describe_options",
    "error_rows",
    "image_options_of",
    "jsonable",
    "same_settings",
]

#: manifest fields that vary between builds of the same index (the rest must match for "no change"); ef and
#: recall are measured like the shard layout, and same_recall_settings compares what was asked
VOLATILE_FIELDS = frozenset(
    {
        "version",
        "files",
        "built_at",
        "builder",
        "stats",
        "build",
        "previous_version",
        "schema_version",
        "kind",
        "ef",
        "ef_by_query",
        "recall",
        "shards",
        "sharding",
    }
)


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from the index's JSON files (tuples become lists...)."""
    return json.loads(json.dumps(value, allow_nan=False))


def same_settings(manifest: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Every non-volatile manifest field (model, precision, source, image options, HNSW settings, count...)
    would be written again unchanged. ``settings`` holds this build's fields plus ``ef`` and
    ``target_recall`` (compared through :func:`same_recall_settings`)."""
    if manifest.get("schema_version") != SCHEMA_VERSION:  # an older format: rewrite it
        return False
    if not same_recall_settings(manifest, settings["ef"], settings["target_recall"]):
        return False
    keys = (set(settings) | set(manifest)) - VOLATILE_FIELDS - {"target_recall"}
    return all(jsonable(settings.get(k)) == manifest.get(k) for k in keys)


def image_options_of(manifest: dict[str, Any]) -> ImageOptions | None:
    """The image options the version's vectors were made with; None when unreadable (never equal, so
    nothing is reused)."""
    try:
        return ImageOptions.from_manifest(manifest.get("image_preprocess"))
    except SearchError:
        return None


def describe_options(options: ImageOptions | None) -> str:
    if options is None:
        return "unknown options"
    draft = "on" if options.jpeg_draft else "off"
    return f"background {format_background(options.background)}, JPEG draft {draft}"


def error_rows(store: Store, version: str, manifest: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The version's ``errors.jsonl`` rows; None when the manifest lists no such file or its checksum does not
    match (not to be trusted). Storage errors propagate."""
    entry = (manifest.get("files") or {}).get(ERRORS_FILE)
    if not isinstance(entry, dict) or "sha256" not in entry:
        return None
    raw = store.read_bytes(version_prefix(version) + ERRORS_FILE)
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        return None
    return [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
