"""Rebuild throughput: images/s of the index builder end to end vs pure encode vs baseline A's loop.

Calls ``bench.rebuild_run.run`` (the index-builder's own measurement): on ``n`` demo images (128 px
JPEG) it runs ``index_builder.build.build`` into a fresh index (end to end: read, hash, decode and
preprocess on worker threads overlapping ONNX inference; 'total' adds listing, HNSW and writing the
version), ``embed_pixels`` on pre-decoded arrays (pure encode, the ceiling), and baseline A's loop
(open_clip torch with its own transform, one image at a time, embeddings as SQLite blobs).

Then the step-wise build (plan -> embed workers -> publish, what the Step Functions job runs) with 1 and 2
local worker processes (:mod:`bench.rebuild.scaling`), and from the per-vCPU rate a projection of a
1M-image first build on Lambda (:mod:`bench.rebuild.projection`) - arithmetic on the measured rate, not a
measurement.
"""

from __future__ import annotations

from bench.common import Context, Section, export_bundle, register_quick_model
from bench.rebuild import goals, scaling, throughput
from bench.rebuild.plot import plot


def run(ctx: Context) -> Section:
    sec = Section("build", "Rebuild — images/s end to end")
    if ctx.quick:
        register_quick_model(ctx.cache)
    big = export_bundle(ctx)
    configs, notes = throughput.configs(ctx, big)
    for note in notes:
        sec.add(note)
    results = throughput.measure(ctx, configs)
    throughput.add_table(sec, ctx, results)
    sec.goals.extend(goals.rebuild_goals(results))
    sec.plots.append(plot(ctx, results))
    sec.data["results"] = results
    n, steps = scaling.measure(ctx, big)
    scaling.add_report(sec, ctx, n, steps)
    return sec
