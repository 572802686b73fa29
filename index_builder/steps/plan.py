"""Step 1, plan: take the lock, list the source, diff it against the current version, write the work.

Cheap and torch/ONNX-free: it reads the bundle's manifest (fingerprint, dim), the current version's
``items.jsonl`` (checksummed) and the source listing; no image bytes. Items whose id, uri, size, mtime (and
etag) equal the current version's row are reused by label; the others become the todo list that the embed
workers share (a worker still reuses the previous vector when the bytes hash to the same sha256).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any

from handler.core.duplicates import duplicate_settings
from handler.core.errors import ConfigError, SearchError
from handler.core.images import ImageOptions
from handler.core.index_format import read_manifest, read_pointer, version_prefix
from handler.core.storage import S3Store, Store, open_store
from index_builder.errors import BuildError, UsageError
from index_builder.lock import BuildLock
from index_builder.options import BuildOptions, _Log
from index_builder.source_base import IMAGE_EXTENSIONS, Source
from index_builder.sources import open_source
from index_builder.steps import work
from index_builder.steps.batching import DEFAULT_CHUNK_ITEMS, MAX_BATCH_BYTES, batch_items_for
from index_builder.steps.plan_diff import diff_listing
from index_builder.steps.plan_previous import previous_rows
from index_builder.version_settings import same_settings
from index_builder.version_write import new_version_id
from index_builder.workdir import shard_key

__all__ = ["plan"]

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


def _read_current(dest: Store, full: bool) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(pointer, manifest)`` of the published version (None, None: no index yet, or an unreadable one
    with ``--full``)."""
    try:
        pointer = read_pointer(dest)
        if pointer is None:
            return None, None
        return pointer, read_manifest(dest, pointer["version"], pointer["manifest_sha256"])
    except SearchError as e:
        if not full:
            raise BuildError(
                f"--out {dest.uri}: the current index cannot be read ({e.message}); "
                "pass --full to build a new version from scratch"
            ) from None
        return None, None


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
    pointer, manifest = _read_current(dest, opts.full)
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

    prev_items, prev_errors = previous_rows(dest, current, manifest, opts, options, log)
    diff = diff_listing(items, prev_items, prev_errors, opts.max_pixels)
    listing, todo = diff.listing, diff.todo
    reused = sum(1 for e in listing if e["state"] == "reuse")
    errors = sum(1 for e in listing if e["state"] == "error")
    counts = {
        "listed": len(items),
        "reuse": reused,
        "todo": len(todo),
        "errors": errors,
        "removed": len(set(diff.by_id) - {i.id for i in items}) if prev_items is not None else None,
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
        diff.same_rows
        and prev_items is not None
        and labels == list(range(len(prev_items)))
        and errors == len(prev_errors)
        and manifest is not None
        and same_settings(manifest, settings)
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
    info["known"] = (
        bool(todo) and prev_items is not None and work.write_known(dest, work.known_key(run_id), prev_items)
    )
    where = _write_plan(dest, run_id, listing, todo, info)
    log.info(
        f"planned run {run_id}: {len(items)} listed, {reused} unchanged, {len(todo)} to embed in batches of "
        f"{n}, {errors} error(s)"
    )
    return {**summary, "changed": True, "version": run_id, "batch_items": n, "items": where}


def _write_plan(
    dest: Store, run_id: str, listing: list[dict[str, Any]], todo: list[dict[str, Any]], info: dict[str, Any]
) -> dict[str, str]:
    """Write the run's listing, todo list and plan (last: a plan without it is incomplete); returns where
    the todo list is (``{"Key"}``, plus ``"Bucket"`` for an S3 index: the Distributed Map's reader)."""
    dest.write_bytes(work.listing_key(run_id), b"".join(work.dumps(e) + b"\n" for e in listing))
    dest.write_bytes(work.items_key(run_id), work.dumps(todo))
    dest.write_bytes(work.plan_key(run_id), work.dumps(info))
    where = {
        "Key": (dest.prefix + "/" if isinstance(dest, S3Store) and dest.prefix else "")
        + work.items_key(run_id)
    }
    if isinstance(dest, S3Store):
        where["Bucket"] = dest.bucket
    return where
