"""The offline rebuild job: source images -> embeddings -> a new published index version.

:func:`build` runs the whole job (the CLI is a thin wrapper):

1. load the encoder (ONNX bundle, or open_clip torch with the bundle's weights);
2. read DEST's current version (refusing another model's index unless ``full``);
3. list the source; items whose id, uri, size, mtime (and S3 etag) equal the previous version's row are
   reused without reading them; the others are read and hashed, and a vector is reused when the content
   hash is known (previous version or checkpoint shards), else the image is decoded and embedded;
4. unless ``full``: when the result equals the current version (same rows, vectors, errors and index
   settings), publish nothing - warm functions keep their index and ``--keep-versions`` keeps history;
5. write the version (index.hnsw, items.jsonl, embeddings.npy, errors.jsonl, manifest.json last), move the
   pointer, prune old versions, clean the work directory.

Incremental by default; resumable (checkpoint shards in the work dir, see :mod:`index_builder.workdir`).
Options and progress output: :mod:`index_builder.options`; DEST's previous versions:
:mod:`index_builder.previous`; steps 3-4 (reuse plan, read/hash/decode/embed):
:mod:`index_builder.embed_items`; writing the version: :mod:`index_builder.version_write`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from handler.core.bundle import RANDOM_INIT_WARNING, is_random_init
from handler.core.duplicates import duplicate_settings
from handler.core.errors import ConfigError, SearchError
from handler.core.index_format import read_pointer
from handler.core.preprocess import ImagePreprocessor
from handler.core.storage import Store, open_store
from index_builder.backends import load_backend
from index_builder.embed_items import resolve_items
from index_builder.errors import BuildError, UsageError
from index_builder.options import (
    BuildOptions,
    BuildResult,
    _exts,
    _Log,
    format_skipped,
)
from index_builder.previous import (
    _cleanup_pending,
    _Previous,
    _previous_ids,
    _prune,
    _read_current,
    _same_as_previous,
)
from index_builder.publish import publish
from index_builder.source_base import Source
from index_builder.sources import open_source
from index_builder.version_write import BUILDER, new_version_id, write_version
from index_builder.workdir import PREVIOUS, WorkDir, default_work_dir, shard_key

__all__ = ["build"]


def build(
    opts: BuildOptions,
    *,
    store: Store | None = None,
    source: Source | None = None,
    progress: Callable[..., Any] | None = None,
) -> BuildResult:
    """Run one build. ``store`` / ``source`` override the ones opened from ``opts.out`` / ``opts.source``
    (tests wrap them to inject failures). Raises :class:`BuildError` (message for the user)."""
    opts.validate()
    log = _Log(opts.quiet)
    t_start = time.perf_counter()
    try:
        dest = store or open_store(opts.out)
    except ConfigError as e:
        raise UsageError(f"--out: {e.message}") from None
    work_root = Path(opts.work_dir).expanduser().absolute() if opts.work_dir else default_work_dir(dest.uri)
    src = source or open_source(opts.source, workers=max(4, opts.workers))

    # 1. encoder
    backend = load_backend(
        opts, cache_dir=None
    )  # an S3 bundle is cached where the runtime caches it (CACHE_DIR)
    fingerprint, dim = backend.model_fingerprint, backend.dim
    try:
        preprocessor = ImagePreprocessor(
            backend.manifest["image"], max_pixels=opts.max_pixels, background=opts.background
        )
    except SearchError as e:
        raise BuildError(f"--bundle {opts.bundle}: {e.message}") from None
    log.info(
        f"model {backend.manifest['model'].get('name')} {fingerprint[:23]}... ({opts.backend}, "
        f"{opts.precision}, "
        f"{backend.device}), dim {dim}"
    )
    if is_random_init(backend.manifest["model"]):
        log.warn(RANDOM_INIT_WARNING)

    # 2. the current version of DEST
    prev = _read_current(dest, opts, fingerprint, log)
    current_version = prev.version if prev else None

    image_preprocess = preprocessor.options.to_manifest()
    with _index_lock(dest, current_version, log):  # one build at a time per index, serial or step-wise
        work = WorkDir(
            work_root,
            shard_key(fingerprint, opts.precision, opts.backend, dim, image_preprocess),
            {
                "model_fingerprint": fingerprint,
                "precision": opts.precision,
                "backend": opts.backend,
                "dim": dim,
                "image_preprocess": image_preprocess,
                "dest": dest.uri,
            },
        ).open()
        try:
            return _build_locked(
                opts, dest, src, backend, preprocessor, prev, current_version, work, log, t_start, progress
            )
        finally:
            work.close()


def _index_lock(dest: Store, current_version: str | None, log: _Log) -> Any:
    """DEST's ``.rebuild/LOCK`` (:mod:`index_builder.lock`), shared with the step-wise build; a stale lock
    of a dead step-wise run is taken over and what that run left is removed."""
    from index_builder.lock import holding_lock
    from index_builder.steps.plan import _forget_run

    return holding_lock(
        dest,
        new_version_id(),
        kind="serial",
        warn=log.warn,
        forget=lambda stale: _forget_run(dest, stale, current_version, log),
    )


def _build_locked(
    opts: BuildOptions,
    dest: Store,
    src: Source,
    backend: Any,
    preprocessor: ImagePreprocessor,
    prev: _Previous | None,
    current_version: str | None,
    work: WorkDir,
    log: _Log,
    t_start: float,
    progress: Callable[..., Any] | None,
) -> BuildResult:
    fingerprint, dim = backend.model_fingerprint, backend.dim
    stale = work.discard_stale()
    if stale:
        log.info(f"discarded {stale} checkpoint shard(s) of another model/precision/backend")
    _cleanup_pending(dest, work, current_version, log)

    # 3. source listing and reuse plan
    src.warn = log.warn  # type: ignore[method-assign]
    src.max_bytes = opts.max_file_bytes
    t_list = time.perf_counter()
    try:
        items = src.list()
    except SearchError as e:
        raise BuildError(f"--source {src.uri}: {e.message}") from None
    skipped = dict(sorted(getattr(src, "skipped", {}).items()))
    log.info(
        f"source {src.uri}: {len(items)} image(s) listed in {time.perf_counter() - t_list:.1f}s"
        + (f"; skipped {format_skipped(skipped)}" if skipped else "")
    )
    if not items and not opts.allow_empty:
        raise BuildError(
            f"--source {src.uri} has no images (looked for {', '.join(_exts())}); check the path or "
            "prefix, or pass --allow-empty to publish an empty index"
        )

    found = resolve_items(opts, dest, src, items, backend, preprocessor, prev, work, log, progress)
    resolved, errors, item_warnings, how = found.rows, found.errors, found.warnings, found.how
    pipeline_seconds, reuse = found.pipeline_seconds, found.reuse

    # 5. assemble the version
    rows: list[dict[str, Any]] = []
    vecs: list[np.ndarray] = []
    for pos in range(len(items)):
        if pos in resolved:
            row, vec = resolved[pos]
            rows.append(row)
            vecs.append(vec)
    vectors = np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
    if opts.strict and errors:
        shown = "\n".join(f"  {e['id']}: {e['reason']}: {e['message']}" for e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise BuildError(
            f"--strict: {len(errors)} file(s) could not be indexed; nothing was published:\n{shown}{more}\n"
            f"(computed embeddings are checkpointed in {work.root}; fix or remove the files and re-run)"
        )
    if not rows and not opts.allow_empty:
        raise BuildError(
            f"none of the {len(items)} image(s) of {src.uri} could be indexed ({len(errors)} error(s), "
            f"first: {errors[0]['id']}: {errors[0]['message'] if errors else ''}); nothing was published"
        )

    current_ids = {row["id"] for row in rows}
    prev_ids = set(prev.rows) if prev is not None and prev.rows else set(_previous_ids(dest, prev, log))
    stats: dict[str, Any] = {
        "embedded": how["embedded"],
        "resumed": how["resumed"],
        "unchanged": how["unchanged"],
        "reused": how["reused"],
        "added": len(current_ids - prev_ids),
        "changed": sum(1 for r in rows if r["id"] in prev_ids) - how["unchanged"],
        "removed": len(prev_ids - current_ids),
        "errors": len(errors),
        "warnings": len(item_warnings),
        "listed": len(items),
        "count": len(rows),
        "skipped": skipped,
    }
    rate = (how["embedded"] / pipeline_seconds) if pipeline_seconds > 0 and how["embedded"] else 0.0
    version = new_version_id()
    fields = {
        "model_fingerprint": fingerprint,
        "precision": opts.precision,
        "source": src.uri,
        "stats": stats,
        "builder": BUILDER,
        "backend": opts.backend,
        "previous_version": current_version,
        "image_preprocess": preprocessor.options.to_manifest(),
        "duplicates": duplicate_settings(opts.duplicate_threshold),
        "build": {
            "prepare_seconds": None,
            "pipeline_seconds": round(pipeline_seconds, 3),
            "images_per_s": round(rate, 2),
            "batch_size": opts.batch_size,
            "workers": opts.workers,
            "device": backend.device,
            "max_pixels": opts.max_pixels,
            "max_file_bytes": opts.max_file_bytes,
            "full": opts.full,
        },
    }
    fields["build"]["prepare_seconds"] = round(
        time.perf_counter() - t_start, 3
    )  # all but writing the version

    if reuse and prev is not None and _same_as_previous(dest, prev, rows, vectors, errors, fields, opts, log):
        work.clear_pending()
        pruned = _prune(dest, opts.keep_versions, prev.version, log)
        work.clean()
        return BuildResult(
            version=prev.version,
            manifest=prev.manifest,
            stats=stats,
            errors=errors,
            seconds=time.perf_counter() - t_start,
            embed_seconds=pipeline_seconds,
            work_dir=work.root,
            pruned=pruned,
            previous_version=current_version,
            published=False,
            warnings=item_warnings,
            skipped=skipped,
        )

    # 6. publish: every file first, the pointer last, then prune and clean up
    work.write_pending({"dest": dest.uri, "version": version})
    where = dest.uri
    try:
        log.info(f"writing version {version} ({len(rows)} items) to {where}")
        manifest = write_version(
            dest,
            version,
            vectors=vectors,
            items=rows,
            manifest_fields=fields,
            M=opts.M,
            ef_construction=opts.ef_construction,
            ef=opts.ef,
            errors=errors,
            shard_size=opts.index_shard_size,
            target_recall=opts.target_recall,
            previous_dir=work.root / PREVIOUS if reuse else None,  # what _load_previous_vectors fetched
        )
        latest = read_pointer(dest)
        if (latest["version"] if latest else None) != current_version:
            log.warn(
                f"{where} was published by another build meanwhile "
                f"(now {latest['version'] if latest else None}); publishing this build anyway"
            )
        publish(dest, version, manifest)
    except (SearchError, OSError) as e:
        msg = getattr(e, "message", None) or str(e)
        served = f"version {current_version}" if current_version else "no version (there was none before)"
        raise BuildError(
            f"publishing version {version} to {where} failed: {msg}\nThe pointer was not moved: {where} "
            "still serves "
            f"{served}. Embeddings are checkpointed in {work.root}; re-run the same command to retry "
            "without embedding again."
        ) from None
    work.clear_pending()
    pruned = _prune(dest, opts.keep_versions, version, log)
    work.clean()
    return BuildResult(
        version=version,
        manifest=manifest,
        stats=stats,
        errors=errors,
        seconds=time.perf_counter() - t_start,
        embed_seconds=pipeline_seconds,
        work_dir=work.root,
        pruned=pruned,
        previous_version=current_version,
        warnings=item_warnings,
        skipped=skipped,
    )
