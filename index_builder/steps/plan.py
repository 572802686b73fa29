"""Step 1, plan: take the lock, list the source, diff it against the current version, write the work.

Cheap and torch/ONNX-free: it reads the bundle's manifest (fingerprint, dim), the current version's
``items.jsonl`` (checksummed) and the source listing; no image bytes. Items whose id, uri, size, mtime (and
etag) equal the current version's row are reused by label; the others become the todo list that the embed
workers share (a worker still reuses the previous vector when the bytes hash to the same sha256).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict
from typing import Any

from handler.core.duplicates import duplicate_settings
from handler.core.errors import ArtifactError, ConfigError, SearchError
from handler.core.images import ImageOptions, format_background
from handler.core.index_format import (
    ERRORS_FILE,
    SCHEMA_VERSION,
    read_manifest,
    read_pointer,
    shard_specs,
    version_prefix,
)
from handler.core.storage import S3Store, Store, open_store
from index_builder.build import BuildOptions, _item_row, _Log, _unchanged_row
from index_builder.facts import previous_content
from index_builder.lock import BuildLock
from index_builder.publish import new_version_id
from index_builder.shard_write import same_recall_settings, version_items
from index_builder.sources import IMAGE_EXTENSIONS, BuildError, Source, SourceItem, UsageError, open_source
from index_builder.steps import work
from index_builder.workdir import shard_key

__all__ = ["DEFAULT_CHUNK_ITEMS", "batch_items_for", "plan"]

DEFAULT_CHUNK_ITEMS = 64  # images per checkpointed output object (also the batch size granule)
# options a run's embed and publish steps use (the plan pins them, so every worker embeds alike)
# (the image options - background, JPEG draft - are pinned as the plan's ``image_preprocess``)
RUN_OPTIONS = (
    "source",
    "bundle",
    "precision",
    "backend",
    "device",
    "pretrained",
    "max_pixels",
    "max_file_bytes",
    "batch_size",
    "M",
    "ef_construction",
    "ef",
    "target_recall",
    "index_shard_size",
    "keep_versions",
    "strict",
    "allow_empty",
    "full",
    "threads",
    "workers",
    "duplicate_threshold",
)
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


MAX_BATCH_BYTES = 245_760  # template.yaml ItemBatcher.MaxInputBytesPerBatch (Step Functions allows 256 KiB)


def batch_items_for(
    todo: int,
    *,
    rate: float,
    budget_s: float,
    chunk: int,
    workers: int | None = None,
    max_items: int | None = None,
) -> int:
    """Images per batch: what one worker embeds in ``budget_s`` at ``rate`` images/s, at most ``max_items``
    (what fits the batch byte limit), and (when ``workers`` is given) small enough for ~4 batches per
    worker; a multiple of ``chunk``."""
    n = max(1, int(rate * budget_s))
    if workers:
        n = min(n, math.ceil(max(1, todo) / (4 * workers)))
    if max_items:
        n = min(n, max_items)
        if n >= chunk:
            return n // chunk * chunk
    return max(chunk, math.ceil(n / chunk) * chunk)


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


def _same_file_failed(item: SourceItem, err: dict[str, Any] | None) -> bool:
    """The item failed in the previous version and is the very same file (not re-read, not retried)."""
    if err is None or item.size is None or err.get("size") is None or err.get("reason") == "not_embedded":
        return False
    return (err.get("uri"), err.get("size"), err.get("mtime"), err.get("etag")) == (
        item.uri,
        item.size,
        item.mtime,
        item.etag,
    )


def _previous_options(manifest: dict[str, Any]) -> ImageOptions | None:
    try:
        return ImageOptions.from_manifest(manifest.get("image_preprocess"))
    except SearchError:
        return None  # unreadable: never equal, so nothing is reused


def _same_limits(manifest: dict[str, Any], opts: BuildOptions) -> bool:
    """The previous version was built with the same pixel and file size limits (its errors still hold)."""
    build = manifest.get("build") or {}
    return build.get("max_pixels") == opts.max_pixels and build.get("max_file_bytes") == opts.max_file_bytes


def _same_settings(manifest: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Every non-volatile manifest field (model, precision, source, image options, HNSW settings...) would
    be written again unchanged (the serial build's "no change" rule)."""
    if manifest.get("schema_version") != SCHEMA_VERSION:
        return False
    if not same_recall_settings(manifest, settings["ef"], settings["target_recall"]):
        return False
    keys = (set(settings) | set(manifest)) - set(_VOLATILE) - {"ef", "target_recall"}
    return all(json.loads(json.dumps(settings.get(k))) == manifest.get(k) for k in keys)


def _item_json(item: SourceItem) -> dict[str, Any]:
    d: dict[str, Any] = {"id": item.id, "uri": item.uri, "size": item.size, "mtime": item.mtime}
    if item.etag is not None:
        d["etag"] = item.etag
    if item.key is not None:
        d["key"] = item.key
    return d


def _forget_run(store: Store, stale: dict[str, Any], current: str | None, log: _Log) -> None:
    """Remove what a dead run left: its unpublished version (never the current one) and its run folder."""
    run = stale.get("run_id")
    if not isinstance(run, str) or not run:
        return
    try:
        if run != current and (current is None or run > current):
            n = store.delete_prefix(version_prefix(run))
            if n:
                log.info(f"removed {n} file(s) of unpublished version {run} left by an interrupted build")
        store.delete_prefix(work.run_prefix(run))
    except (SearchError, ValueError) as e:
        log.warn(f"cannot clean up after interrupted run {run} ({e}); harmless, pruned later")


def plan(
    opts: BuildOptions,
    *,
    store: Store | None = None,
    source: Source | None = None,
    batch_items: int | None = None,
    parallel: int | None = None,
    rate: float = 20.0,
    budget_s: float = 600.0,
    chunk_items: int = DEFAULT_CHUNK_ITEMS,
    lock_ttl: float = 6 * 3600,
) -> dict[str, Any]:
    """Plan one run. Returns the summary (also the Step Functions state): ``run_id``, ``changed`` (False:
    nothing to do, lock released, nothing written), ``index_uri``, ``items`` (``{"Bucket", "Key"}`` of the
    todo list for an S3 index, else ``{"Key"}``), ``batch_items``, ``todo`` and ``counts``."""
    opts.validate()
    log = _Log(opts.quiet)
    from index_builder.backends import read_bundle_manifest

    try:
        dest = store or open_store(opts.out)
    except ConfigError as e:
        raise UsageError(f"--out: {e.message}") from None
    bundle = read_bundle_manifest(opts.bundle)
    fingerprint, dim = str(bundle["model_fingerprint"]), int(bundle["embed_dim"])
    if opts.backend == "onnx" and opts.precision not in (bundle.get("precisions") or {}):
        raise BuildError(
            f"--precision {opts.precision}: bundle {opts.bundle} has "
            f"{', '.join(bundle.get('precisions') or {})}"
        )
    src = source or open_source(opts.source, workers=max(4, opts.workers))

    run_id = new_version_id()
    lock = BuildLock(dest, ttl=lock_ttl)
    stale = lock.acquire(run_id)
    try:
        return _plan_locked(
            opts,
            dest,
            src,
            lock,
            stale,
            run_id,
            fingerprint,
            dim,
            log,
            batch_items,
            parallel,
            rate,
            budget_s,
            chunk_items,
        )
    except BaseException:
        lock.release(run_id)
        raise


def _plan_locked(
    opts: BuildOptions,
    dest: Store,
    src: Source,
    lock: BuildLock,
    stale: Any,
    run_id: str,
    fingerprint: str,
    dim: int,
    log: _Log,
    batch_items: int | None,
    parallel: int | None,
    rate: float,
    budget_s: float,
    chunk_items: int,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    pointer, manifest = None, None
    try:
        pointer = read_pointer(dest)
        if pointer is not None:
            manifest = read_manifest(dest, pointer["version"], pointer["manifest_sha256"])
    except SearchError as e:
        if not opts.full:
            raise BuildError(
                f"--out {dest.uri}: the current index cannot be read ({e.message}); "
                "pass --full to build a new version from scratch"
            ) from None
        pointer, manifest = None, None
    current = pointer["version"] if pointer else None
    if stale is not None:
        _forget_run(dest, stale.data, current, log)
    if manifest and manifest["model_fingerprint"] != fingerprint and not opts.full:
        raise BuildError(
            f"--out {dest.uri} holds version {current} built with model {manifest['model_fingerprint']}, "
            f"but --bundle {opts.bundle} is model {fingerprint}: vectors of different models cannot be "
            "mixed. "
            "Pass --full to rebuild the whole index with this bundle, or use the bundle the index was "
            "built with."
        )
    options = ImageOptions(
        background=opts.background
    )  # as the serial build's ImagePreprocessor (JPEG draft on)
    image_preprocess = options.to_manifest()
    model_key = shard_key(fingerprint, opts.precision, opts.backend, dim, image_preprocess)
    for obj in list(dest.list(work.OUT)):  # outputs of another model / precision / backend are useless now
        if not obj.key.startswith(work.out_prefix(model_key)):
            dest.delete(obj.key)

    src.warn = log.warn  # type: ignore[method-assign]
    src.max_bytes = opts.max_file_bytes
    try:
        items = src.list()
    except SearchError as e:
        raise BuildError(f"--source {src.uri}: {e.message}") from None
    skipped = dict(sorted(getattr(src, "skipped", {}).items()))
    if not items and not opts.allow_empty:
        raise BuildError(
            f"--source {src.uri} has no images (looked for {', '.join(IMAGE_EXTENSIONS)}); check the "
            "path or prefix, or pass --allow-empty to publish an empty index"
        )

    prev_items: list[dict[str, Any]] | None = None
    prev_errors: dict[Any, dict[str, Any]] = {}
    if manifest and not opts.full and manifest.get("precision", "fp32") == opts.precision:
        was = _previous_options(manifest)
        if was != options:
            described = (
                f"background {format_background(was.background)}, JPEG draft "
                f"{'on' if was.jpeg_draft else 'off'}"
                if was
                else "unknown options"
            )
            log.info(
                f"version {current} prepared images with {described}, this build with background "
                f"{image_preprocess['background']}: every image is embedded again"
            )
        else:
            try:
                prev_items = _previous_items(dest, current or "", manifest)
                # the previous errors of unchanged files hold only under the same limits
                prev_errors = (
                    _previous_errors(dest, current or "", manifest) if _same_limits(manifest, opts) else {}
                )
            except (SearchError, ValueError) as e:
                log.warn(
                    f"cannot reuse the vectors of version {current} ({e}); every image is embedded again"
                )
    by_id = {
        row["id"]: label
        for label, row in enumerate(prev_items or [])
        if isinstance(row, dict) and "id" in row
    }

    listing: list[dict[str, Any]] = []
    todo: list[dict[str, Any]] = []
    same_rows = prev_items is not None
    for item in items:
        entry = {**_item_json(item), "metadata": item.metadata}
        label = by_id.get(item.id)
        row = prev_items[label] if prev_items is not None and label is not None else None
        if item.error is not None or _same_file_failed(item, prev_errors.get(item.id)):
            err = (
                list(item.error)
                if item.error is not None
                else [prev_errors[item.id]["reason"], prev_errors[item.id]["message"]]
            )
            entry.update(state="error", error=err)
            if item.error is None:
                entry["carried"] = (
                    True  # publish lists it with the errors found while embedding (serial order)
                )
            prev_err = prev_errors.get(item.id)
            if prev_err is None or [prev_err.get("reason"), prev_err.get("message")] != err:
                same_rows = False
        elif (
            row is not None
            and _unchanged_row(item, row)
            and (
                opts.max_pixels is None
                or row.get("width") is None
                or row.get("height") is None
                or row["width"] * row["height"] <= opts.max_pixels
            )
        ):
            entry.update(state="reuse", label=label)
            w, h = row.get("width"), row.get("height")
            if _item_row(item, row["sha256"], item.size, w, h, previous_content(row)) != row:
                same_rows = False  # e.g. the sidecar metadata changed
        else:
            entry["state"] = "todo"
            task = _item_json(item)
            if row is not None and isinstance(row.get("sha256"), str) and row.get("width") is not None:
                task["prev"] = {"sha256": row["sha256"], "width": row["width"], "height": row["height"]}
            todo.append(task)
            same_rows = False
        listing.append(entry)
    reused = sum(1 for e in listing if e["state"] == "reuse")
    errors = sum(1 for e in listing if e["state"] == "error")
    counts = {
        "listed": len(items),
        "reuse": reused,
        "todo": len(todo),
        "errors": errors,
        "removed": len(set(by_id) - {i.id for i in items}) if prev_items is not None else None,
    }
    summary: dict[str, Any] = {"run_id": run_id, "index_uri": dest.uri, "todo": len(todo), "counts": counts}

    settings = {
        "model_fingerprint": fingerprint,
        "precision": opts.precision,
        "source": src.uri,
        "backend": opts.backend,
        "image_preprocess": image_preprocess,
        "duplicates": duplicate_settings(opts.duplicate_threshold),
        "M": opts.M,
        "ef_construction": opts.ef_construction,
        "ef": opts.ef,
        "target_recall": opts.target_recall,
        "dim": dim,
        "count": reused,
        "space": "ip",
    }
    labels = [e["label"] for e in listing if e["state"] == "reuse"]
    if (
        same_rows
        and prev_items is not None
        and labels == list(range(len(prev_items)))
        and errors == len(prev_errors)
        and manifest is not None
        and _same_settings(manifest, settings)
    ):
        dest.delete_prefix(work.OUT)  # outputs of an interrupted run that published before it died
        lock.release(run_id)
        log.info(f"{dest.uri}: no changes since version {current}; nothing to do")
        stats = {
            "embedded": 0,
            "resumed": 0,
            "unchanged": reused,
            "reused": 0,
            "added": 0,
            "changed": 0,
            "removed": 0,
            "errors": errors,
            "warnings": 0,
            "listed": len(items),
            "count": reused,
            "skipped": skipped,
        }
        return {
            **summary,
            "changed": False,
            "version": current,
            "batch_items": 0,
            "items": None,
            "stats": stats,
        }

    if parallel:  # local pool: smaller chunks for small runs, so that every worker gets several
        chunk_items = min(chunk_items, max(1, math.ceil(len(todo) / (4 * parallel))))
    widest = max((len(work.dumps(t)) + 1 for t in todo), default=1)
    n = batch_items or batch_items_for(
        len(todo),
        rate=rate,
        budget_s=budget_s,
        chunk=chunk_items,
        workers=parallel,
        max_items=max(1, (MAX_BATCH_BYTES - 1024) // widest),
    )
    run_opts = {k: v for k, v in asdict(opts).items() if k in RUN_OPTIONS}
    run_opts["source"] = src.uri
    info = {
        "run_id": run_id,
        "version": run_id,
        "options": run_opts,
        "model_fingerprint": fingerprint,
        "dim": dim,
        "model_key": model_key,
        "image_preprocess": image_preprocess,
        "skipped": skipped,
        "previous": pointer,
        "counts": counts,
        "batch_items": n,
        "chunk_items": chunk_items,
        "created": time.time(),
        "plan_seconds": round(time.perf_counter() - t0, 3),
    }
    known = (
        bool(todo) and prev_items is not None and work.write_known(dest, work.known_key(run_id), prev_items)
    )
    info["known"] = known
    dest.write_bytes(work.listing_key(run_id), b"".join(work.dumps(e) + b"\n" for e in listing))
    dest.write_bytes(work.items_key(run_id), work.dumps(todo))
    dest.write_bytes(work.plan_key(run_id), work.dumps(info))  # last: a plan without it is incomplete
    where = {
        "Key": (dest.prefix + "/" if isinstance(dest, S3Store) and dest.prefix else "")
        + work.items_key(run_id)
    }
    if isinstance(dest, S3Store):
        where["Bucket"] = dest.bucket
    log.info(
        f"planned run {run_id}: {len(items)} listed, {reused} unchanged, {len(todo)} to embed in batches of "
        f"{n}, {errors} error(s)"
    )
    return {**summary, "changed": True, "version": run_id, "batch_items": n, "items": where}
