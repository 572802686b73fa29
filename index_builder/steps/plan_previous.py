"""What a plan may take over from the current version: its item rows (vectors reused by label), its error
rows (the same file failing again is not retried), and whether its settings equal this run's (the "no
change" rule of the serial build)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from handler.core.errors import ArtifactError, SearchError
from handler.core.images import ImageOptions
from handler.core.index_format import ERRORS_FILE, SCHEMA_VERSION, shard_specs, version_prefix
from handler.core.storage import Store
from index_builder.options import BuildOptions, _Log
from index_builder.previous import _describe_options
from index_builder.shard_write import same_recall_settings, version_items

__all__ = ["previous_rows", "same_settings"]

# manifest fields that vary between builds of the same index (as index_builder.build compares them)
_VOLATILE = (
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
    "recall",
    "shards",
    "sharding",
)


def _previous_items(store: Store, version: str, manifest: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The version's rows by label (tombstoned rows as ``{}``: never reused), None without embeddings."""
    if any("embeddings" not in spec.files for spec in shard_specs(manifest)):
        return None
    try:
        rows, dead = version_items(store, manifest)
    except ArtifactError:
        return None
    return [{} if label in dead else row for label, row in enumerate(rows)]


def _previous_errors(store: Store, version: str, manifest: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    """The previous version's error rows by id (only rows that carry the file's size/mtime can be trusted)."""
    entry = (manifest.get("files") or {}).get(ERRORS_FILE)
    if not entry:
        return {}
    raw = store.read_bytes(version_prefix(version) + ERRORS_FILE)
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        return {}
    rows = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    return {r["id"]: r for r in rows if isinstance(r, dict) and "id" in r}


def _previous_options(manifest: dict[str, Any]) -> ImageOptions | None:
    try:
        return ImageOptions.from_manifest(manifest.get("image_preprocess"))
    except SearchError:
        return None  # unreadable: never equal, so nothing is reused


def _same_limits(manifest: dict[str, Any], opts: BuildOptions) -> bool:
    """The previous version was built with the same pixel and file size limits (its errors still hold)."""
    build = manifest.get("build") or {}
    return build.get("max_pixels") == opts.max_pixels and build.get("max_file_bytes") == opts.max_file_bytes


def previous_rows(
    store: Store,
    current: str | None,
    manifest: dict[str, Any] | None,
    opts: BuildOptions,
    options: ImageOptions,
    log: _Log,
) -> tuple[list[dict[str, Any]] | None, dict[Any, dict[str, Any]]]:
    """``(items by label or None, errors by id)`` of the current version that this run may reuse: none
    with ``--full``, another precision or other image options (logged), or when they cannot be read."""
    if not manifest or opts.full or manifest.get("precision", "fp32") != opts.precision:
        return None, {}
    was = _previous_options(manifest)
    if was != options:
        log.info(
            f"version {current} prepared images with {_describe_options(was)}, this build with background "
            f"{options.to_manifest()['background']}: every image is embedded again"
        )
        return None, {}
    items: list[dict[str, Any]] | None = None
    errors: dict[Any, dict[str, Any]] = {}
    try:
        items = _previous_items(store, current or "", manifest)
        # the previous errors of unchanged files hold only under the same limits
        errors = _previous_errors(store, current or "", manifest) if _same_limits(manifest, opts) else {}
    except (SearchError, ValueError) as e:
        log.warn(f"cannot reuse the vectors of version {current} ({e}); every image is embedded again")
    return items, errors


def same_settings(manifest: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Every non-volatile manifest field (model, precision, source, image options, HNSW settings...) would
    be written again unchanged (the serial build's "no change" rule)."""
    if manifest.get("schema_version") != SCHEMA_VERSION:
        return False
    if not same_recall_settings(manifest, settings["ef"], settings["target_recall"]):
        return False
    keys = (set(settings) | set(manifest)) - set(_VOLATILE) - {"ef", "target_recall"}
    return all(json.loads(json.dumps(settings.get(k))) == manifest.get(k) for k in keys)
