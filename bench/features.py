"""Search features at 100k vectors: filtered search latency by selectivity (HNSW with a filter vs exact search
over the matching subset, and where :data:`handler.core.shards.FILTER_EXACT_BELOW` switches), and the
build-time duplicate finder's cost against the HNSW build it runs on."""

from __future__ import annotations

from bench import duplicates, filtered
from bench.common import Context, Goal, Section, ms, table
from handler.core.shards import FILTER_EXACT_BELOW, FILTER_EXACT_BELOW_HNSW_VECTORS

N_FULL = 100_000
N_QUICK = 5_000


def run(ctx: Context) -> Section:
    n = N_QUICK if ctx.quick else N_FULL
    sec = Section("features", "Search features — filters and the duplicate finder")
    rows = filtered.run(
        n,
        queries=20 if ctx.quick else 40,
        threads=ctx.threads,
        cell_seconds=1.0 if ctx.quick else 3.0,
        cache=ctx.scratch("features") / f"filtered-{n}.hnsw",
        log=ctx.log,
    )
    sec.add(
        f"**Filtered search** ({n:,} clustered 512-d vectors, hnswlib M=16, ef_construction 100, k=10, one "
        "query per call, p50). 'HNSW + filter' walks the graph with hnswlib's filter (only allowed labels "
        "count as results); 'exact subset' scores every allowed vector: copied out of hnswlib "
        "(`get_items`: an index held in memory only), read in place from the HNSW file (an index loaded from "
        "S3) or from embeddings.npy (a local index). The service switches to the exact subset below "
        f"{FILTER_EXACT_BELOW:.0%} allowed (vectors read in place) or {FILTER_EXACT_BELOW_HNSW_VECTORS:.1%} "
        "(`get_items`), so it returns k results whenever k items match. 'faster' compares the graph walk "
        "with the slower of the two in-place reads.",
        table(
            [
                "allowed",
                "items",
                "HNSW + filter",
                "its recall@10",
                "exact subset (get_items)",
                "exact subset (HNSW file)",
                "exact subset (embeddings.npy)",
                "faster (local)",
                "service uses",
            ],
            [
                [
                    f"{r['selectivity']:.1%}",
                    f"{r['allowed']:,}",
                    ms(r["hnsw"]),
                    f"{r['hnsw_recall']:.3f}",
                    ms(r["exact"]),
                    ms(r["exact_file"]),
                    ms(r["exact_npy"]),
                    r["faster"],
                    r["chosen"],
                ]
                for r in rows
            ],
            align="lrrrrrrll",
        ),
    )
    dup = duplicates.measure(n, ctx.threads)
    sec.add(
        f"**Duplicate finder** (build time, `find_duplicate_groups` on the version's HNSW index: k=16 "
        f"neighbours per item, threshold {dup['threshold']}): {n:,} vectors with 1% re-encoded copies: "
        f"{dup['duplicates_s']:.1f} s after an HNSW build of {dup['hnsw_build_s']:.1f} s "
        f"({dup['duplicates_vs_build']:.2f}x the build); {dup['groups']:,} groups, "
        f"{dup['grouped_items']:,} items grouped.",
    )
    wrong = [r for r in rows if r["chosen"] != r["faster"]]
    sec.goals.append(
        Goal(
            "Filtered search: the switch point picks the faster way",
            "at every measured selectivity",
            f"{len(rows) - len(wrong)} of {len(rows)}",
            not wrong,
            ""
            if not wrong
            else "picks the slower way at " + ", ".join(f"{r['selectivity']:.1%}" for r in wrong),
        )
    )
    sec.data["filtered"] = rows
    sec.data["duplicates"] = dup
    return sec
