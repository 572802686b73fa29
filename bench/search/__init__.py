"""Search: latency and recall@10 of the HNSW index (through handler.core.search.SearchIndex) at several ef,
against exact search in numpy and baseline A (SQLite blobs + full numpy scan), plus build time and memory.

Data: 512-d L2-normalised vectors around 1000 Gaussian clusters on the sphere (queries drawn from the
same distribution, not in the index), and at 10k real embeddings of demo images from the demo model.
Ground truth: exact inner-product top-10. Latency: one query per call (as the service does), p50/p99.
"""

from __future__ import annotations

import json

from bench.common import Context, Section
from bench.search import datasets, goals, params, tables
from bench.search.plot import plot

__all__ = ["run"]


def run(ctx: Context) -> Section:
    sec = Section("search", "Search — latency and recall@10 at 10k / 100k / 1M vectors")
    sizes, nq = params.sizes(ctx.quick)
    synthetic, notes = datasets.synthetic(ctx, sizes, nq)
    demo, demo_notes = datasets.demo(ctx)
    results = synthetic + demo
    tables.add_latency(sec, results, nq)
    tables.add_build(sec, results)
    for note in notes + demo_notes:
        sec.add(note)
    goals.add_goals(sec, results, sizes[-1] if ctx.quick else 100_000)
    sec.plots.append(plot(ctx, results))
    sec.data["results"] = json.loads(json.dumps(results, default=str))
    sec.data["params"] = params.as_data(nq)
    return sec
