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
:mod:`index_builder.previous`. Size note: ~360 lines because ``_build_locked`` is the job's steps 2-5 in
order, kept together to be read as one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

from handler.core.bundle import RANDOM_INIT_WARNING, is_random_init
from handler.core.duplicates import duplicate_settings
from handler.core.errors import ConfigError, SearchError
from handler.core.index_format import read_manifest, read_pointer
from handler.core.preprocess import ImagePreprocessor
from handler.core.storage import StorageError, Store, open_store
from index_builder.facts import previous_content
from index_builder.options import (
    BACKENDS,
    DEFAULT_MAX_FILE_BYTES,
    BuildOptions,
    BuildResult,
    _exts,
    _Log,
    _progress_bar,
    default_workers,
    format_skipped,
)
from index_builder.pipeline import Prepared, error_row, prepared_stream
from index_builder.previous import (
    _cleanup_pending,
    _describe_options,
    _item_row,
    _load_previous_vectors,
    _Previous,
    _previous_ids,
    _previous_options,
    _prune,
    _same_as_previous,
    _unchanged_row,
)
from index_builder.publish import BUILDER, new_version_id, publish, write_version
from index_builder.sources import BuildError, Source, SourceItem, UsageError, open_source
from index_builder.workdir import CachedVector, WorkDir, default_work_dir, shard_key

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_FILE_BYTES",
    "BuildOptions",
    "BuildResult",
    "build",
    "default_workers",
    "format_skipped",
]


def _load_backend(opts: BuildOptions, cache_dir: str | None) -> Any:
    from index_builder.backends import OnnxBackend, TorchBackend, read_bundle_manifest

    if opts.backend == "torch":
        manifest = read_bundle_manifest(opts.bundle)
        return TorchBackend(
            manifest,
            pretrained=opts.pretrained,
            device=opts.device,
            precision=opts.precision,
            batch_size=opts.batch_size,
        )
    return OnnxBackend(
        opts.bundle,
        precision=opts.precision,
        threads=opts.threads,
        batch_size=opts.batch_size,
        cache_dir=cache_dir,
    )


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
    backend = _load_backend(
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
    prev: _Previous | None = None
    try:
        pointer = read_pointer(dest)
        if pointer is not None:
            prev = _Previous(
                pointer["version"], read_manifest(dest, pointer["version"], pointer["manifest_sha256"])
            )
    except SearchError as e:
        if not opts.full:
            raise BuildError(
                f"--out {dest.uri}: the current index cannot be read ({e.message}); "
                "pass --full to build a new version from scratch"
            ) from None
        log.warn(f"ignoring the unreadable current index of {dest.uri} ({e.message})")
        pointer, prev = None, None
    current_version = prev.version if prev else None
    if prev and prev.manifest["model_fingerprint"] != fingerprint and not opts.full:
        raise BuildError(
            f"--out {dest.uri} holds version {prev.version} built with model "
            f"{prev.manifest['model_fingerprint']}, "
            f"but --bundle {opts.bundle} is model {fingerprint}: vectors of different models cannot be "
            "mixed. "
            "Pass --full to rebuild the whole index with this bundle, or use the bundle the index was "
            "built with."
        )

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

    reuse = False
    if prev is not None:
        if opts.full:
            log.info(f"--full: not reusing vectors of version {prev.version}")
        elif prev.manifest.get("precision", "fp32") != opts.precision:
            log.info(
                f"version {prev.version} is {prev.manifest.get('precision')}, this build {opts.precision}: "
                "every image is embedded again"
            )
        elif _previous_options(prev) != preprocessor.options:
            log.info(
                f"version {prev.version} prepared images with {_describe_options(_previous_options(prev))}, "
                f"this build with {_describe_options(preprocessor.options)}: every image is embedded again"
            )
        else:
            reuse = _load_previous_vectors(dest, prev, work.root, log)

    shard_cache, n_shards = work.load_shards(dim, log.warn)
    if shard_cache:
        log.info(
            f"resuming: {len(shard_cache)} vector(s) checkpointed in {n_shards} shard(s) under "
            f"{work.shard_dir}"
        )
    run_cache: dict[str, CachedVector] = {}

    def known(sha: str) -> CachedVector | None:
        hit = run_cache.get(sha) or shard_cache.get(sha)
        if hit is None and reuse and prev is not None:
            hit = prev.cached(sha)
        return hit

    errors: list[dict[str, Any]] = []
    item_warnings: list[dict[str, Any]] = []
    resolved: dict[int, tuple[dict[str, Any], np.ndarray]] = {}  # position in items -> (row, vector)
    how: dict[str, int] = {"embedded": 0, "resumed": 0, "unchanged": 0, "reused": 0}
    todo: list[int] = []

    def add_error(item: SourceItem, reason: str, message: str) -> None:
        errors.append(error_row(item, reason, message))

    for pos, item in enumerate(items):
        if item.error is not None:
            add_error(item, *item.error)
            continue
        if reuse and prev is not None and prev.embeddings is not None:
            label = prev.rows.get(item.id)
            if label is not None and _unchanged_row(item, prev.items[label]):
                row = prev.items[label]
                w, h = row.get("width"), row.get("height")
                if opts.max_pixels is None or w is None or h is None or w * h <= opts.max_pixels:
                    vec = np.asarray(prev.embeddings[label], dtype=np.float32)
                    resolved[pos] = (
                        _item_row(item, row["sha256"], item.size, w, h, previous_content(row)),
                        vec,
                    )
                    how["unchanged"] += 1
                    continue
        todo.append(pos)

    # 4. read, hash, decode, embed what is left
    shards = work.shard_writer(opts.shard_size)
    bar = _progress_bar(len(todo), opts.quiet, progress)
    embed_seconds = 0.0
    batch: list[Prepared] = []

    def finish(p: Prepared, vec: np.ndarray, kind: str) -> None:
        item = items[todo[p.position]]
        if kind == "cached":
            if p.sha256 in run_cache:
                kind = "reused"  # same content as another image embedded in this run
            elif p.sha256 in shard_cache:
                kind = "resumed"
            else:  # from the previous version: the same id (touched, same bytes) or another id (copy, rename)
                label = prev.rows.get(item.id) if prev is not None else None
                same = label is not None and prev is not None and prev.items[label].get("sha256") == p.sha256
                kind = "unchanged" if same else "reused"
        how[kind] += 1
        resolved[todo[p.position]] = (
            _item_row(item, p.sha256 or "", p.size, p.width, p.height, p.facts),
            vec,
        )

    def flush() -> None:
        nonlocal embed_seconds
        if not batch:
            return
        t0 = time.perf_counter()
        vectors = backend.embed(np.stack([cast(np.ndarray, p.pixels) for p in batch]))  # set: not cached
        embed_seconds += time.perf_counter() - t0
        for p, vec in zip(batch, vectors, strict=True):
            assert p.sha256 is not None
            if p.sha256 not in run_cache:
                run_cache[p.sha256] = CachedVector(vec, p.width, p.height)
                shards.add(p.sha256, vec, p.width or 0, p.height or 0)
            finish(p, vec, "embedded")
            p.pixels = None
        bar.update(len(batch))
        batch.clear()
        shards.maybe_flush()

    t_embed = time.perf_counter()
    ahead = max(2 * opts.batch_size, 4 * opts.workers)
    try:
        for p in prepared_stream(
            [items[i] for i in todo], src, preprocessor, known, workers=opts.workers, ahead=ahead
        ):
            for w in p.warnings or ():
                item = items[todo[p.position]]
                item_warnings.append({"id": item.id, "uri": item.uri, "message": w})
                log.item_warning(len(item_warnings), item.id, w)
            if p.error is not None:
                add_error(items[todo[p.position]], *p.error)
                bar.update(1)
            elif p.cached is not None:
                finish(p, p.cached.vector, "cached")
                bar.update(1)
            else:
                batch.append(p)
                if len(batch) >= opts.batch_size:
                    flush()
        flush()
        shards.flush()
    except StorageError as e:  # the source's storage failed (not one missing object): do not publish a gap
        raise BuildError(
            f"reading the source failed: {e.message}\nNothing was published. Embeddings computed so far "
            f"are checkpointed in {work.root}; re-run the same command to resume."
        ) from None
    finally:
        bar.close()
        with contextlib.suppress(Exception):
            shards.flush()  # keep what was computed before an error or Ctrl-C (a no-op after success)
    pipeline_seconds = time.perf_counter() - t_embed
    if len(item_warnings) > log.item_warnings_shown:
        log.info(f"... and {len(item_warnings) - log.item_warnings_shown} more warning(s) (listed by --json)")

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
