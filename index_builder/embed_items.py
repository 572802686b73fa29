"""Steps 3-4 of a build (:mod:`index_builder.build`): which listed items keep the previous version's vector
without being read (same id, uri, size, mtime (+ etag)), and the read / hash / decode / embed pipeline for
the rest (vectors reused by content hash from this run, the checkpoint shards or the previous version)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from handler.core.preprocess import ImagePreprocessor
from handler.core.storage import StorageError, Store
from index_builder.errors import BuildError
from index_builder.facts import previous_content
from index_builder.options import BuildOptions, _Log, _progress_bar
from index_builder.pipeline import Prepared, error_row, prepared_stream
from index_builder.previous import (
    _item_row,
    _load_previous_vectors,
    _Previous,
    _unchanged_row,
)
from index_builder.source_base import Source, SourceItem
from index_builder.version_settings import describe_options, image_options_of
from index_builder.workdir import CachedVector, WorkDir

__all__ = ["Resolved", "resolve_items"]


@dataclass
class Resolved:
    """What steps 3-4 found: per position in the listing, its items row and vector; the error rows, the
    per-item warnings, how each vector was obtained, the pipeline's seconds, and whether the previous
    version's vectors were reused."""

    rows: dict[int, tuple[dict[str, Any], np.ndarray]]
    errors: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    how: dict[str, int]
    pipeline_seconds: float
    reuse: bool


def resolve_items(
    opts: BuildOptions,
    dest: Store,
    src: Source,
    items: list[SourceItem],
    backend: Any,
    preprocessor: ImagePreprocessor,
    prev: _Previous | None,
    work: WorkDir,
    log: _Log,
    progress: Callable[..., Any] | None,
) -> Resolved:
    """The vectors of ``items`` (the source's listing): reused or embedded. :class:`BuildError` when the
    source's storage fails (nothing is published; what was embedded is checkpointed)."""
    dim = backend.dim
    reuse = False
    if prev is not None:
        if opts.full:
            log.info(f"--full: not reusing vectors of version {prev.version}")
        elif prev.manifest.get("precision", "fp32") != opts.precision:
            log.info(
                f"version {prev.version} is {prev.manifest.get('precision')}, this build {opts.precision}: "
                "every image is embedded again"
            )
        elif (was := image_options_of(prev.manifest)) != preprocessor.options:
            log.info(
                f"version {prev.version} prepared images with {describe_options(was)}, "
                f"this build with {describe_options(preprocessor.options)}: every image is embedded again"
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

    return Resolved(resolved, errors, item_warnings, how, pipeline_seconds, reuse)
