"""Step 2, embed one batch: read, hash, decode and embed its items; write the vectors under ``.rebuild/out/``.

The batch is cut into chunks of ``chunk_items``; each chunk's output is one object keyed by the content of
its items (:func:`index_builder.steps.work.chunk_key`) and written atomically, so:

* a duplicated or retried batch skips the chunks that exist (idempotent, and two workers on the same batch
  write the same objects - whichever lands last is equally right);
* a worker that runs short of time (``remaining_s()`` below the margin) stops between chunks and raises
  :class:`BatchIncomplete`; the retry (Step Functions ``Retry``) continues where it stopped - a long
  batch is split across invocations. A worker killed mid-chunk loses only that chunk.

Nothing in the worker's ``/tmp`` is needed by the next step. The encoder is loaded once per process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from handler.core.images import ImageOptions
from handler.core.preprocess import ImagePreprocessor
from handler.core.storage import Store
from index_builder.backends import load_backend
from index_builder.errors import BuildError
from index_builder.options import BuildOptions
from index_builder.pipeline import prepared_stream
from index_builder.source_base import Source, SourceItem
from index_builder.sources import open_source
from index_builder.steps import work
from index_builder.workdir import CachedVector

__all__ = ["BatchIncomplete", "embed_batch"]

MIN_MARGIN_S = 20.0


class BatchIncomplete(RuntimeError):
    """The worker stopped before its deadline with part of the batch done (checkpointed); retry the batch."""


_cache: dict[str, Any] = {}  # per process: plans, sources, encoders (a warm Lambda reuses them)


def _load_plan(store: Store, run_id: str) -> dict[str, Any]:
    key = f"plan:{store.uri}:{run_id}"
    if key not in _cache:
        try:
            _cache[key] = work.read_json(store, work.plan_key(run_id))
        except FileNotFoundError:
            raise BuildError(
                f"run {run_id} has no plan in {store.uri} (already published, or never planned)"
            ) from None
    return _cache[key]


def _options(plan: dict[str, Any], overrides: dict[str, Any]) -> BuildOptions:
    o = dict(plan["options"])
    o.update({k: v for k, v in overrides.items() if v is not None})
    return BuildOptions(out="", **o)


def _encoder(opts: BuildOptions, options: ImageOptions) -> tuple[Any, ImagePreprocessor]:
    """The encoder (loaded once per process) and the run's image preparation (the plan's options)."""
    key = f"enc:{opts.bundle}:{opts.precision}:{opts.backend}:{opts.device}:{opts.pretrained}:{opts.threads}"
    if key not in _cache:
        _cache[key] = load_backend(opts, cache_dir=None)
    backend = _cache[key]
    pre = ImagePreprocessor(
        backend.manifest["image"],
        max_pixels=opts.max_pixels,
        background=options.background,
        draft=options.jpeg_draft,
    )
    return backend, pre


def _run_image_options(plan: dict[str, Any]) -> ImageOptions:
    """The image options every worker of the run applies (pinned by the plan; default for older plans)."""
    return (
        ImageOptions.from_manifest(plan["image_preprocess"]) if "image_preprocess" in plan else ImageOptions()
    )


def _source(uri: str, workers: int, max_bytes: int | None) -> Source:
    key = f"src:{uri}"
    if key not in _cache:
        _cache[key] = open_source(uri, workers=workers)
    src: Source = _cache[key]
    src.max_bytes = max_bytes  # the run's --max-file-bytes: a larger file is not read
    return src


def _known(store: Store, run_id: str, plan: dict[str, Any]) -> work.Known | None:
    key = f"known:{store.uri}:{run_id}"
    if key not in _cache:
        _cache[key] = work.Known(store.read_bytes(work.known_key(run_id))) if plan.get("known") else None
    return _cache[key]


def _embed_chunk(
    items: list[dict[str, Any]],
    src: Source,
    backend: Any,
    pre: ImagePreprocessor,
    opts: BuildOptions,
    previous: work.Known | None = None,
) -> tuple[list[dict[str, Any]], np.ndarray]:
    # content the previous version holds (this id's old bytes, or a renamed/copied file): publish takes its
    # vector, nothing to embed
    known: dict[str, CachedVector] = {}
    for it in items:
        prev = it.get("prev")
        if prev:
            known[prev["sha256"]] = CachedVector(np.zeros(0, np.float32), prev["width"], prev["height"])

    def lookup(sha: str) -> CachedVector | None:
        hit = known.get(sha)
        if hit is None and previous is not None:
            wh = previous.get(sha)
            hit = CachedVector(np.zeros(0, np.float32), *wh) if wh else None
        return hit

    sources = [
        SourceItem(
            id=it["id"],
            uri=it["uri"],
            size=it.get("size"),
            mtime=it.get("mtime"),
            etag=it.get("etag"),
            key=it.get("key"),
        )
        for it in items
    ]
    rows: list[dict[str, Any]] = []
    pending: list[tuple[int, np.ndarray]] = []
    vectors: list[np.ndarray] = []

    def flush() -> None:
        if pending:
            out = backend.embed(np.stack([p for _, p in pending]))
            for (i, _), vec in zip(pending, out, strict=True):
                rows[i]["vec"] = len(vectors)
                vectors.append(vec)
            pending.clear()

    stream = prepared_stream(
        sources,
        src,
        pre,
        lookup,
        workers=max(1, opts.workers),
        ahead=max(2 * opts.batch_size, 4 * opts.workers),
    )
    for p, it in zip(stream, items, strict=True):
        row: dict[str, Any] = {
            "sig": work.item_sig(it),
            "sha256": p.sha256,
            "size": p.size,
            "width": p.width,
            "height": p.height,
            "facts": p.facts,
        }
        rows.append(row)
        if p.warnings:
            row["warnings"] = list(p.warnings)
        if p.error is not None:
            row["error"] = list(p.error)
        elif p.cached is not None:
            row["previous"] = True
        else:
            assert p.pixels is not None  # no error, not cached: the worker prepared the pixels
            pending.append((len(rows) - 1, p.pixels))
            if len(pending) >= opts.batch_size:
                flush()
    flush()
    arr = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, 1), np.float32)
    return rows, arr


def embed_batch(
    store: Store,
    run_id: str,
    items: list[dict[str, Any]],
    *,
    remaining_s: Callable[[], float] | None = None,
    overrides: dict[str, Any] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Embed ``items`` (the plan's todo entries) for run ``run_id``. ``remaining_s``: seconds left before
    the caller is killed (Lambda's ``get_remaining_time_in_millis() / 1000``). ``overrides``: worker-local
    options (``device``, ``threads``, ``workers``, ``backend``/``pretrained`` for a GPU worker).
    Returns counts; raises :class:`BatchIncomplete` when it stopped early."""
    t0 = time.perf_counter()
    plan = _load_plan(store, run_id)
    opts = _options(plan, overrides or {})
    chunk = int(plan["chunk_items"])
    prefix = work.out_prefix(plan["model_key"])
    stats: dict[str, Any] = {"items": len(items), "chunks": 0, "found": 0, "embedded": 0, "errors": 0}
    slowest = 0.0
    backend = pre = src = None
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        key = prefix + work.chunk_key(part) + ".npz"
        stats["chunks"] += 1
        if store.exists(key):
            stats["found"] += 1
            continue
        if remaining_s is not None and remaining_s() < max(MIN_MARGIN_S, 2 * slowest + 5):
            done = start // chunk
            raise BatchIncomplete(
                f"stopped before the deadline with {done} of {-(-len(items) // chunk)} chunk(s) "
                "of the batch written; the retry continues from there"
            )
        t_chunk = time.perf_counter()
        if backend is None:
            backend, pre = _encoder(opts, _run_image_options(plan))
            src = _source(opts.source, max(4, opts.workers), opts.max_file_bytes)
            if backend.model_fingerprint != plan["model_fingerprint"] or backend.dim != plan["dim"]:
                raise BuildError(
                    f"--bundle {opts.bundle} is model {backend.model_fingerprint}, but run {run_id} "
                    f"was planned for {plan['model_fingerprint']}"
                )
        assert src is not None and pre is not None  # set with backend above
        rows, vectors = _embed_chunk(part, src, backend, pre, opts, _known(store, run_id, plan))
        work.write_chunk(store, key, rows, vectors)
        stats["embedded"] += sum(1 for r in rows if "vec" in r)
        stats["errors"] += sum(1 for r in rows if "error" in r)
        slowest = max(slowest, time.perf_counter() - t_chunk)
        if on_chunk is not None:
            on_chunk(stats["chunks"])
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    return stats
