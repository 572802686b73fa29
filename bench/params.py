"""HNSW parameters: M and ef_construction chosen from measurements (issue 15, "recall by construction").

For each size (per shard: 100k, and 500k = the default shard size, i.e. each shard of a 1M index) and each
M:ef_construction pair, one shard built as the builder builds it (``version_write.write_version``: held-out
calibration of the image and text efs to recall@10 >= 0.99, no near-duplicate groups), then searched
through the service's path at its calibrated efs. The trade-off: build time and bytes per vector against
query latency at equal recall. ``BENCH_PARAMS_N`` (e.g. ``100000,500000``) and ``BENCH_PARAMS_CONFIGS``
(e.g. ``8:200,16:100,16:200,32:200``) override the matrix.
"""

from __future__ import annotations

import gc
import os
import shutil
from typing import Any

import numpy as np

from bench.common import Context, Section, mib, ms, table
from bench.scale import N_QUICK, QUERIES, K, measure_index, write_index
from bench.vectors import centres, exact_topk, make
from index_builder.recall import text_like

TITLE = "HNSW parameters — M and ef_construction at 100k and 500k vectors per shard"
SIZES = (100_000, 500_000)
CONFIGS = ((8, 200), (16, 100), (16, 200), (32, 200))
DEFAULT = (16, 200)  # the builder's (index_builder.options, --M / --ef-construction)


def _configs(quick: bool) -> list[tuple[int, int]]:
    raw = os.environ.get("BENCH_PARAMS_CONFIGS")
    if not raw:
        return [(8, 200), DEFAULT] if quick else list(CONFIGS)
    return [(int(m), int(e)) for m, e in (c.split(":") for c in raw.split(","))]


def run(ctx: Context) -> Section:
    sizes = [N_QUICK] if ctx.quick else [int(n) for n in os.environ.get("BENCH_PARAMS_N", "").split(",") if n]
    sizes = sizes or list(SIZES)
    nq = 100 if ctx.quick else QUERIES
    sec = Section("params", TITLE)
    c = centres()
    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    for n in sizes:
        data = make("clustered", n, 1, c)
        queries = make("clustered", nq, 2, c)
        text = text_like(make("clustered", nq, 3, c), np.random.default_rng(4))
        sets = {"image": (queries, exact_topk(queries, data, K)), "text": (text, exact_topk(text, data, K))}
        for M, efc in _configs(ctx.quick):
            ctx.log(f"{n:,} vectors, M {M}, ef_construction {efc}: building ...")
            root = ctx.scratch(f"params-{n}-{M}-{efc}")
            build_s = write_index(
                root,
                "v1",
                data,
                list(range(n)),
                ctx.threads,
                duplicates=False,
                shard_size=n,
                M=M,
                ef_construction=efc,
            )
            m = measure_index(root, sets)
            m["build_s"] = build_s
            shutil.rmtree(root)
            results[f"{n}/{M}/{efc}"] = m
            ctx.log(
                f"  ef {m['ef']} / {m['text']['ef']}, p50 {ms(m['p50'])} / {ms(m['text']['p50'])}, build "
                f"{build_s:.0f} s"
            )
            rows.append(
                [
                    f"{n:,}",
                    f"{M} / {efc}" + (" (default)" if (M, efc) == DEFAULT else ""),
                    f"{build_s:.0f} s",
                    f"{m['ef']} / {m['text']['ef']}",
                    f"{m['recall']:.4f} / {m['text']['recall']:.4f}",
                    f"{ms(m['p50'])} / {ms(m['text']['p50'])}",
                    f"{ms(m['p99'])} / {ms(m['text']['p99'])}",
                    mib(m["bytes"]),
                    f"{m['rss'] / n:.0f}",
                ]
            )
        del data
        gc.collect()
    sec.add(
        f"Clustered 512-d vectors (bench.vectors), one shard of N; {nq} held-out queries of the distribution "
        "('image') and as many text-like ones (as in Scale); each index searched one query per call through "
        "`load_index` + `SearchIndex.search` at its calibrated ef per kind (recall@10 >= 0.99 on the "
        f"builder's held-out sample); recall against exact search; {ctx.threads} threads. "
        "'image / text' in every column.",
        table(
            [
                "N (one shard)",
                "M / ef_construction",
                "build",
                "ef (manifest)",
                "recall@10",
                "p50",
                "p99",
                "size (no .npy)",
                "RSS/vector loaded",
            ],
            rows,
            align="llrrlrrrr",
        ),
    )
    sec.data["results"] = results
    return sec
