"""The search section's tables: latency and recall per engine and collection, and the index build."""

from __future__ import annotations

from typing import Any

from bench.common import Section, mib, ms, ratio_text, table
from bench.search.params import EF_CONSTRUCTION, K, M
from bench.vectors import CLUSTERS, DIM, SPREAD


def add_latency(sec: Section, results: list[dict[str, Any]], nq: int) -> None:
    """Latency (p50, p99), recall@10 and the speed-up vs baseline A, one row per engine and collection."""
    rows = []
    for r in results:
        if "build_estimate_s" in r:
            rows.append([r["name"], "HNSW (not built, see note)", "–", "–", "–", "–", "–"])
        for ef, e in sorted((r.get("hnsw") or {}).items()):
            extra = ""
            if "recall_by_kind" in e:
                extra = " (" + ", ".join(f"{k} {v:.3f}" for k, v in e["recall_by_kind"].items()) + ")"
            rows.append(
                [
                    r["name"],
                    f"HNSW ef={ef}",
                    ms(e["p50"]),
                    ms(e["p99"]),
                    f"{e['recall']:.4f}{extra}",
                    ms(e["raw_p50"]),
                    _x(_sql_p50(r), e["p50"]),
                ]
            )
        if "numpy" in r:
            e = r["numpy"]
            rows.append(
                [
                    r["name"],
                    f"numpy exact (in RAM, {e['queries']} q)",
                    ms(e["p50"]),
                    ms(e["p99"]),
                    f"{e['recall']:.4f}",
                    "–",
                    _x(_sql_p50(r), e["p50"]),
                ]
            )
        if "sqlite" in r:
            e = r["sqlite"]
            rows.append(
                [
                    r["name"],
                    f"baseline A: SQLite scan ({e['queries']} q)",
                    ms(e["p50"]),
                    ms(e["p99"]),
                    f"{e['recall']:.4f}",
                    "–",
                    "1.00x",
                ]
            )
        elif "sqlite_extrapolated" in r:
            rows.append(
                [
                    r["name"],
                    "baseline A: SQLite scan (**extrapolated** from 100k)",
                    ms(r["sqlite_extrapolated"]["p50"]),
                    "–",
                    "–",
                    "–",
                    "1.00x",
                ]
            )
    sec.add(
        f"{DIM}-d L2-normalised vectors around {CLUSTERS} Gaussian clusters on the sphere (noise norm "
        f"{SPREAD} of the unit centre); {nq} queries from the same distribution (not in the index); ground "
        f"truth = exact inner-product top-{K}. HNSW: hnswlib as the index builder builds it (space ip, "
        f"M={M}, ef_construction={EF_CONSTRUCTION}; the builder's default is 200, see the build table), "
        "queried through `handler.core.search.SearchIndex.search` one query per call on one thread (what the "
        "service does); 'raw' = hnswlib `knn_query` alone. Baseline A: float32 blobs in SQLite, each query "
        "loads every blob, stacks them, dot product, full argsort (bench/baseline_sqlite.py); the query "
        "vector is given (embedding excluded everywhere).",
        table(
            ["Data", "Engine", "p50", "p99", f"recall@{K}", "raw hnswlib p50", "speed-up vs A (p50)"],
            rows,
            align="llrrlrr",
        ),
    )


def add_build(sec: Section, results: list[dict[str, Any]]) -> None:
    """Build time and memory of HNSW, its cold load, and baseline A's insert and query memory."""
    brows = []
    for r in results:
        b = r.get("build")
        s = r.get("sqlite")
        if "build_estimate_s" in r:
            brows.append(
                [
                    r["name"],
                    f"~{r['build_estimate_s'] / 60:.0f} min (**extrapolated**, not built)",
                    "–",
                    "–",
                    "–",
                    "–",
                    "–",
                    f"{s['insert_s']:.1f} s / {mib(s['file'])}" if s else "–",
                    mib(s["query_peak_delta"]) if s and s.get("query_peak_delta") is not None else "–",
                ]
            )
            continue
        if not b:
            continue
        cl = r.get("cold_load")
        brows.append(
            [
                r["name"],
                f"{b['seconds']:.1f} s" + ("" if b["complete"] else " (stopped)"),
                f"{b['rate']:,.0f}",
                mib(b["rss_delta"]),
                mib(b["peak_delta"]) if b.get("peak_delta") is not None else "–",
                mib(r["index_file"]) if "index_file" in r else "–",
                f"{cl['hnsw_load_s']:.2f} s + {cl['sha256_s']:.2f} s" if cl else "–",
                f"{s['insert_s']:.1f} s / {mib(s['file'])}" if s else "–",
                mib(s["query_peak_delta"]) if s and s.get("query_peak_delta") is not None else "–",
            ]
        )
    sec.add(
        "### Index build",
        table(
            [
                "Data",
                "HNSW build",
                "vectors/s",
                "RSS after − before",
                "peak RSS − before",
                "index.hnsw size",
                "cold load: hnswlib + sha256 (index.hnsw, embeddings.npy)",
                "baseline A insert / file",
                "baseline A query: peak RSS − before",
            ],
            brows,
        ),
        "'cold load' is what a new service process pays for this index before its first answer: hnswlib "
        "reading index.hnsw, plus the sha256 that `load_index` (verify=True, local store) computes over the "
        "version's big files.",
        f"Raw vectors alone are {DIM * 4} bytes each ({mib(DIM * 4 * 1_000_000)} per million).",
    )


def _sql_p50(r: dict[str, Any]) -> float | None:
    if "sqlite" in r:
        return r["sqlite"]["p50"]
    if "sqlite_extrapolated" in r:
        return r["sqlite_extrapolated"]["p50"]
    return None


def _x(base: float | None, t: float) -> str:
    return "–" if base is None else ratio_text(base / t)
