"""Lambda handlers of the rebuild state machine (template.yaml: RebuildStateMachine), one per step.

All three run from the same image (index_builder/Dockerfile); each function sets its handler in
``ImageConfig.Command``. Locations come from the environment the template sets: ``SOURCE_URI``,
``MODEL_URI``, ``INDEX_URI`` (writes are allowed only under it), ``PRECISION``, ``KEEP_VERSIONS``; the
planner also reads ``EMBED_RATE`` (images/s of one embed worker, measured) and ``WORKER_BUDGET_SECONDS``
(how long one batch may take, well inside the embed function's timeout) to size the batches, and
``LOCK_TTL_SECONDS`` and ``CHUNK_ITEMS`` (images per checkpointed output object, default 64).

Events, exactly as Step Functions delivers them:

* :func:`plan_handler` - the execution input, e.g. ``{}`` or ``{"full": true, "source": "s3://..."}``
  (the keys of :data:`index_builder.lambda_job.EVENT_KEYS`). Returns the plan summary, the state the
  Choice and the Distributed Map read: ``changed``, ``run_id``, ``items`` (``{"Bucket", "Key"}`` of the
  todo list for ``ItemReader``), ``batch_items`` (for ``ItemBatcher.MaxItemsPerBatchPath``).
* :func:`embed_handler` - one ``ItemBatcher`` batch: ``{"Items": [...todo entries], "BatchInput":
  {"run_id": ...}}``. Raises :class:`~index_builder.steps.BatchIncomplete` when it stopped before its
  deadline (the state machine retries it; the retry continues).
* :func:`publish_handler` - the plan summary (the Map's ``ResultPath`` is null). Returns the version.

A failure raises; the error name (``BuildLocked``, ``BuildError``, ``BatchIncomplete``) is what the
state machine's Retry/Catch match on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from handler.core.images import DEFAULT_MAX_PIXELS, parse_background
from handler.core.storage import open_store
from index_builder.lambda_job import RebuildFailed, normalise_event
from index_builder.options import BuildOptions
from index_builder.steps import embed_batch, plan, publish_run

__all__ = ["embed_handler", "plan_handler", "publish_handler"]


def _env(name: str, default: str | None = None) -> str:
    value = (os.environ.get(name) or "").strip() or default
    if value is None:
        raise RebuildFailed(f"{name} is not set in the function's environment (template.yaml sets it)")
    return value


def _number(name: str, default: str) -> float:
    raw = _env(name, default)
    try:
        value = float(raw)
    except ValueError:
        raise RebuildFailed(f"{name}={raw!r}: must be a number") from None
    if value <= 0:
        raise RebuildFailed(f"{name}={raw!r}: must be positive")
    return value


def _log(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, default=str, separators=(",", ":")), flush=True)


def plan_options(event: Any) -> BuildOptions:
    ev = normalise_event(event)
    opts = BuildOptions(
        source=ev.get("source") or _env("SOURCE_URI"),
        bundle=_env("MODEL_URI"),
        out=_env("INDEX_URI"),
        full=bool(ev.get("full")),
        strict=bool(ev.get("strict")),
        precision=ev.get("precision") or _env("PRECISION", "fp32"),
        keep_versions=int(ev.get("keep_versions") or _number("KEEP_VERSIONS", "3")),
        max_pixels=DEFAULT_MAX_PIXELS,
        quiet=True,
    )
    if ev.get("workers"):
        opts.workers = ev["workers"]
    if ev.get("background"):  # transparent images composited over it; recorded in the plan for every worker
        try:
            opts.background = parse_background(ev["background"])
        except ValueError as e:
            raise RebuildFailed(f"event['background']: {e}") from None
    return opts


def plan_handler(event: Any, context: Any = None) -> dict[str, Any]:
    opts = plan_options(event)
    summary = plan(
        opts,
        rate=_number("EMBED_RATE", "20"),
        budget_s=_number("WORKER_BUDGET_SECONDS", "600"),
        lock_ttl=_number("LOCK_TTL_SECONDS", "21600"),
        chunk_items=int(_number("CHUNK_ITEMS", "64")),
    )
    # what the Distributed Map reads from the state: its concurrency, failure threshold, results location
    summary["map"] = {
        "max_concurrency": int(_number("MAX_CONCURRENCY", "10")),
        "tolerated_failure_percentage": float(_env("TOLERATED_FAILURE_PERCENTAGE", "0")),
    }
    if summary.get("items"):
        summary["results_prefix"] = summary["items"]["Key"].rsplit("/", 1)[0] + "/results"
    _log("rebuild_planned", **summary)
    return summary


def _remaining(context: Any) -> Any:
    fn = getattr(context, "get_remaining_time_in_millis", None)
    return (lambda: fn() / 1000.0) if callable(fn) else None


def embed_handler(event: Any, context: Any = None) -> dict[str, Any]:
    if not isinstance(event, Mapping) or not isinstance(event.get("Items"), list):
        raise RebuildFailed('embed: expected an ItemBatcher batch {"Items": [...], "BatchInput": {...}}')
    run_id = (event.get("BatchInput") or {}).get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise RebuildFailed("embed: BatchInput.run_id is missing")
    t0 = time.monotonic()
    stats = embed_batch(
        open_store(_env("INDEX_URI")), run_id, list(event["Items"]), remaining_s=_remaining(context)
    )
    _log("rebuild_batch_done", run_id=run_id, **{**stats, "seconds": round(time.monotonic() - t0, 3)})
    return stats  # small: the Map discards results (ResultPath null)


def publish_handler(event: Any, context: Any = None) -> dict[str, Any]:
    run_id = event.get("run_id") if isinstance(event, Mapping) else None
    if not isinstance(run_id, str) or not run_id:
        raise RebuildFailed("publish: the plan summary (with run_id) is expected as input")
    result = publish_run(open_store(_env("INDEX_URI")), run_id, lock_ttl=_number("LOCK_TTL_SECONDS", "21600"))
    out = {
        "version": result["version"],
        "published": result["published"],
        "already": result.get("already"),
        "stats": result["stats"],
        "pruned": result["pruned"],
        "errors": len(result["errors"]),
    }
    _log("rebuild_published", **out)
    return out
