"""``index_builder build --parallel N``: the Step Functions job on one machine.

plan -> the todo list cut into batches (the Distributed Map's ItemBatcher) -> N worker processes
(``concurrent.futures.ProcessPoolExecutor``, spawned, one encoder each) running :func:`embed_batch` ->
publish. The same step functions as on AWS, the same work area in DEST, so a run killed at any point
(SIGKILL of the parent or a worker) is finished by running the same command again: the stale lock of the
dead process is taken over, the chunks already written are found, nothing is published twice.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from handler.core.cpus import usable_cpus
from handler.core.errors import ConfigError
from handler.core.storage import Store, open_store
from index_builder.errors import UsageError
from index_builder.options import BuildOptions
from index_builder.steps import embed_batch, plan, publish_run, work

__all__ = ["build_parallel"]

_worker: dict[str, Any] = {}


def _init(dest_uri: str, overrides: dict[str, Any]) -> None:
    _worker["store"] = open_store(dest_uri)
    _worker["overrides"] = overrides


def _run_batch(run_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return embed_batch(_worker["store"], run_id, items, overrides=_worker["overrides"])


def build_parallel(
    opts: BuildOptions, processes: int, *, store: Store | None = None, batch_items: int | None = None
) -> dict[str, Any]:
    """Run plan, ``processes`` embed workers and publish. Returns the publish result (``published`` False
    when there was nothing to do)."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise UsageError(f"--parallel {processes!r}: must be an integer >= 1")
    t0 = time.perf_counter()
    try:
        dest = store or open_store(opts.out)
    except ConfigError as e:
        raise UsageError(f"--out: {e.message}") from None
    summary = plan(opts, store=dest, batch_items=batch_items, parallel=processes)
    run_id = summary["run_id"]
    if not summary["changed"]:
        stats = summary.get("stats") or {}
        return {
            "version": summary["version"],
            "published": False,
            "stats": stats,
            "errors": [],
            "pruned": [],
            "warnings": [],
            "skipped": stats.get("skipped", {}),
            "previous_version": summary["version"],
            "seconds": time.perf_counter() - t0,
            "embed_seconds": 0.0,
            "summary": summary,
        }
    todo = work.read_json(dest, work.items_key(run_id))
    n = summary["batch_items"]
    batches = [todo[i : i + n] for i in range(0, len(todo), n)]
    # per worker: an equal share of the cores for onnxruntime and the decode threads
    share = max(1, usable_cpus() // processes)
    overrides = {
        "threads": opts.threads or share,
        "workers": max(1, min(opts.workers, share)),
        "device": opts.device,
    }
    t_embed = time.perf_counter()
    embedded = 0
    if batches:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=min(processes, len(batches)),
            mp_context=ctx,
            initializer=_init,
            initargs=(dest.uri, overrides),
        ) as ex:
            futures = [ex.submit(_run_batch, run_id, b) for b in batches]
            for done, fut in enumerate(as_completed(futures), 1):
                embedded += fut.result()["embedded"]
                if not opts.quiet:
                    print(f"batch {done}/{len(batches)} done", file=sys.stderr, flush=True)
    embed_seconds = time.perf_counter() - t_embed
    result = publish_run(dest, run_id, quiet=opts.quiet)
    result.update(
        seconds=time.perf_counter() - t0, embed_seconds=embed_seconds, embedded_now=embedded, summary=summary
    )
    return result
