"""Scale at 1M vectors: the issue's goals (recall@10 and p50 at the manifest's ef, incremental publish of
a 1% change, cold load from S3, bytes per vector) at the size they are stated for, on both distributions
and the builder's default sharding (2 shards of 500k). K shards vs one index is bench.scale at 100k: each 1M
build takes ~15 minutes on 2 cores, so the builds here also skip the near-duplicate groups
(``--no-duplicates``; a full duplicate pass about doubles a build). ``BENCH_SCALE_1M_N`` overrides N."""

from __future__ import annotations

import os

from bench.common import Context, Section
from bench.scale import N_FULL, N_QUICK, measure

TITLE = "Scale at 1M vectors — the goals at full size (both distributions, default sharding)"


def run(ctx: Context) -> Section:
    n = N_QUICK if ctx.quick else int(os.environ.get("BENCH_SCALE_1M_N", N_FULL))
    sec = Section("scale1m", TITLE)
    return measure(ctx, sec, n, kinds=("clustered", "powerlaw"), one_shard=True, duplicates=False)
