"""What a plan may take over from the current version: its item rows (vectors reused by label) and its error
rows (the same file failing again is not retried). The "no change" rule is in
:mod:`index_builder.version_settings`."""

from __future__ import annotations

from typing import Any

from handler.core.errors import ArtifactError, SearchError
from handler.core.images import ImageOptions
from handler.core.index_format import shard_specs
from handler.core.storage import Store
from index_builder.options import BuildOptions, _Log
from index_builder.shard_write import version_items
from index_builder.version_settings import describe_options, error_rows, image_options_of

__all__ = ["previous_rows"]


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
    rows = error_rows(store, version, manifest) or []
    return {r["id"]: r for r in rows if isinstance(r, dict) and "id" in r}


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
    was = image_options_of(manifest)
    if was != options:
        log.info(
            f"version {current} prepared images with {describe_options(was)}, this build with "
            f"{describe_options(options)}: every image is embedded again"
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
