"""The collections measured: clustered synthetic vectors per size (the 1M row within its time budgets),
and real embeddings of demo images from the demo model."""

from __future__ import annotations

import gc
from typing import Any

import numpy as np

from bench.common import Context, DemoUnavailable, demo_bundle
from bench.search.measure import bench_dataset
from bench.search.params import BUILD_BUDGET_S, SQLITE_BUDGET_S, TEMPLATES, size_name
from bench.vectors import CLUSTERS, DIM, clustered


def synthetic(ctx: Context, sizes: list[int], nq: int) -> tuple[list[dict[str, Any]], list[str]]:
    """One result per size, smallest first; at 1M the HNSW build and baseline A run only if the 100k
    rates say they fit their budgets (else the notes say what was extrapolated)."""
    rng = np.random.default_rng(12345)
    centres = rng.standard_normal((CLUSTERS, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    rate_100k = None
    sqlite_per_vec_q = sqlite_per_vec_ins = None
    for n in sizes:
        name = f"{size_name(n)} synthetic"
        deadline_s = None
        sqlite_ok = True
        build = True
        if n >= 1_000_000:
            est = n / rate_100k * 1.2 if rate_100k else float("inf")
            deadline_s = 2 * BUILD_BUDGET_S
            if est > BUILD_BUDGET_S:
                build = False
                notes.append(
                    f"**HNSW at 1M not built:** the 100k build ran at {rate_100k:,.0f} vectors/s, so 1M "
                    f"would take ~{est / 60:.0f} min (**extrapolated**: 10x the vectors x 1.2 for the deeper "
                    f"graph), over this run's {BUILD_BUDGET_S / 60:.0f}-min budget; HNSW latency/recall at "
                    "1M were not measured (numpy exact and baseline A at 1M need no build and were)."
                )
            est_sql = (sqlite_per_vec_ins + 3 * sqlite_per_vec_q) * n if sqlite_per_vec_q else float("inf")
            sqlite_ok = est_sql <= SQLITE_BUDGET_S
            if not sqlite_ok:
                notes.append(
                    f"Baseline A at 1M not run: estimated {est_sql / 60:.0f} min (insert + 3 queries, "
                    f"linear from 100k) over its {SQLITE_BUDGET_S / 60:.0f}-min budget; the 1M "
                    "baseline-A latency shown is extrapolated linearly from 100k."
                )
        ctx.log(f"{name}: generating {n:,} x {DIM} clustered vectors ...")
        data = clustered(n, seed=n, centres=centres)
        queries = clustered(nq, seed=7, centres=centres)
        r = bench_dataset(
            name,
            data,
            queries,
            ctx,
            sqlite_ok=sqlite_ok,
            numpy_queries=nq if n <= 100_000 else 30,
            sqlite_queries=(20 if n <= 10_000 else 5 if n <= 100_000 else 3),
            deadline_s=deadline_s,
            hnsw=build,
        )
        if not build:
            r["build_estimate_s"] = est
        if not sqlite_ok and sqlite_per_vec_q:
            r["sqlite_extrapolated"] = {"p50": sqlite_per_vec_q * n}
        results.append(r)
        if n == 100_000:
            rate_100k = r["build"]["rate"]
            if "sqlite" in r:
                sqlite_per_vec_q = r["sqlite"]["p50"] / n
                sqlite_per_vec_ins = r["sqlite"]["insert_s"] / n
        del data
        gc.collect()
    return results, notes


def demo(ctx: Context) -> tuple[list[dict[str, Any]], list[str]]:
    """The real-embedding row (none, with a note, when the demo model is not available)."""
    n_demo = 2000 if ctx.quick else 10_000
    try:
        data, queries, kinds, trained = demo_dataset(ctx, n_demo, 100 if ctx.quick else 340)
    except DemoUnavailable as exc:
        return [], [f"**Real-embedding rows skipped:** {exc}"]
    r = bench_dataset(
        f"{size_name(n_demo)} demo images",
        data,
        queries,
        ctx,
        sqlite_ok=True,
        numpy_queries=len(queries),
        sqlite_queries=20,
        query_kinds=kinds,
    )
    r["real"] = True
    r["trained"] = trained
    notes = (
        []
        if trained
        else ["Demo rows use a **random-init** demo model: demo/model/demo-clip.pt was not there."]
    )
    return [r], notes


def demo_dataset(
    ctx: Context, n: int, n_img_queries: int
) -> tuple[np.ndarray, np.ndarray, dict[str, slice], bool]:
    """Image embeddings of ``n`` demo images (demo model, ONNX fp32 runtime) and queries: every class
    caption in 5 phrasings (text -> image) plus held-out images (image -> image)."""
    from demo.shapes import CLASSES, sample
    from handler.core.runtime import load_bundle

    bundle, trained = demo_bundle(ctx, precisions=("fp32",))
    cache = ctx.cache / f"demo-embeddings-{bundle.name}-{n}-{n_img_queries}.npz"
    if cache.is_file():
        z = np.load(cache)
        data, queries, n_text = z["data"], z["queries"], int(z["n_text"])
    else:
        emb = load_bundle(bundle, threads=ctx.threads)
        ctx.log(f"embedding {n} demo images with the demo model{'' if trained else ' (random init)'} ...")
        parts = []
        for s in range(0, n, 2000):
            imgs = [im for im, _, _ in sample(min(2000, n - s), seed=1000 + s, size=64)]
            parts.append(emb.embed_images(imgs))
        data = np.concatenate(parts)
        texts = [t.format(colour=c, shape=s) for c, s in CLASSES for t in TEMPLATES]
        held = [im for im, _, _ in sample(n_img_queries, seed=999_999, size=64)]
        queries = np.concatenate([emb.embed_texts(texts), emb.embed_images(held)])
        n_text = len(texts)
        np.savez(cache, data=data, queries=queries, n_text=n_text)
    kinds = {"text": slice(0, n_text), "image": slice(n_text, len(queries))}
    return data.astype(np.float32), queries.astype(np.float32), kinds, trained
