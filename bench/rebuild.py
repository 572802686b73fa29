"""Rebuild throughput: images/s of the index builder end to end vs pure encode vs baseline A's loop.

Calls ``bench.rebuild_run.run`` (the index-builder's own measurement): on ``n`` demo images (128 px
JPEG) it runs ``index_builder.build.build`` into a fresh index (end to end: read, hash, decode and
preprocess on worker threads overlapping ONNX inference; 'total' adds listing, HNSW and writing the
version), ``embed_pixels`` on pre-decoded arrays (pure encode, the ceiling), and baseline A's loop
(open_clip torch with its own transform, one image at a time, embeddings as SQLite blobs).

Then the step-wise build (plan -> embed workers -> publish, what the Step Functions job runs) with 1 and 2
local worker processes (:func:`parallel_scaling`), and from the per-vCPU rate a projection of a 1M-image
first build on Lambda (:func:`lambda_projection`) - arithmetic on the measured rate, not a measurement.
"""

from __future__ import annotations

from typing import Any

from bench.common import (
    Context,
    DemoUnavailable,
    Goal,
    Section,
    demo_bundle,
    demo_checkpoint,
    export_bundle,
    random_checkpoint,
    table,
)

# Issue 13's restated goals: fp32 cannot be 3x torch eager on a CPU where torch already runs near the
# fp32 matmul limit (see the encode section), so the rebuild is held to what it controls: end to end close
# to pure encode for both precisions, and int8 (the builder's default when the service runs int8) 4x torch.
GOAL_VS_ENCODE = 0.90
GOAL_INT8_VS_A = 4.0
# public AWS prices (us-east-1, x86): Lambda per GB-s and per request, Step Functions Standard per transition
LAMBDA_GB_S = 0.0000166667
LAMBDA_REQUEST = 0.20 / 1e6
SFN_TRANSITION = 0.025 / 1000
LAMBDA_MB_PER_VCPU = 1769  # Lambda allots CPU in proportion to memory: 1769 MB = 1 vCPU


def parallel_scaling(
    bundle: Any, n: int, precision: str, processes: tuple[int, ...], scratch: Any, threads: int
) -> dict[int, dict[str, float]]:
    """images/s of ``build --parallel P`` (plan + embed workers + publish) on ``n`` demo images, per P.
    'embed' = the worker phase (process start and encoder load included), 'total' = the whole call."""
    from pathlib import Path

    from demo.shapes import write_collection
    from index_builder.build import BuildOptions
    from index_builder.parallel import build_parallel

    src = Path(scratch) / "images"
    write_collection(src, n, seed=0, size=128, fmt="jpg")
    out: dict[int, dict[str, float]] = {}
    for p in processes:
        opts = BuildOptions(
            source=str(src),
            bundle=str(bundle),
            out=str(Path(scratch) / f"index-{p}"),
            precision=precision,
            quiet=True,
            workers=max(1, threads // p),
        )
        r = build_parallel(opts, p)
        out[p] = {
            "embed": n / r["embed_seconds"],
            "total": n / r["seconds"],
            "embed_seconds": r["embed_seconds"],
            "seconds": r["seconds"],
        }
    return out


def lambda_projection(
    per_vcpu: float,
    *,
    images: int = 1_000_000,
    memory_mb: int = 3008,
    workers: tuple[int, ...] = (10, 100, 500),
    budget_s: float = 600.0,
) -> list[dict[str, Any]]:
    """A 1M-image first build on Lambda from a measured per-vCPU rate: per worker count, the embed phase's
    wall time, Lambda GB-s and the cost at the public price (embed functions + Step Functions transitions;
    plan and publish, i.e. listing and the HNSW build, not included)."""
    vcpus = memory_mb / LAMBDA_MB_PER_VCPU
    rate = per_vcpu * vcpus  # images/s of one worker
    from index_builder.steps.batching import MAX_BATCH_BYTES

    # ~600 s of work, but at most what fits Step Functions' batch byte limit (~190 bytes per S3 item)
    batch = max(1, min(int(rate * budget_s), (MAX_BATCH_BYTES - 1024) // 190))
    batches = -(-images // batch)
    worker_seconds = images / rate
    gb_s = worker_seconds * memory_mb / 1024
    rows = []
    for w in workers:
        rounds = -(-batches // w)
        wall = rounds * batch / rate
        cost = gb_s * LAMBDA_GB_S + batches * LAMBDA_REQUEST + (4 * batches + 10) * SFN_TRANSITION
        rows.append(
            {
                "workers": w,
                "worker_rate": rate,
                "batch_images": batch,
                "batches": batches,
                "wall_s": wall,
                "gb_s": gb_s,
                "cost_usd": cost,
            }
        )
    return rows


def _run(ctx: Context, bundle: Any, ckpt: Any, n: int, loop_n: int, precision: str) -> dict[str, Any]:
    from bench.rebuild_run import run as bench_build

    scratch = ctx.scratch("rebuild")
    return bench_build(
        n,
        bundle=str(bundle),
        pretrained=str(ckpt),
        size=128,
        torch_loop=loop_n > 0,
        torch_loop_n=loop_n or None,
        precision=precision,
        work_dir=str(scratch),
        quiet=True,
    )


def run(ctx: Context) -> Section:
    sec = Section("build", "Rebuild — images/s end to end")
    if ctx.quick:
        from bench.common import register_quick_model

        register_quick_model(ctx.cache)
    n, loop_n, n_demo = (48, 24, 48) if ctx.quick else (1000, 300, 2000)
    big = export_bundle(ctx)
    # (label, bundle, checkpoint, images, torch-loop images, precision); the int8 run reuses the fp32 run's
    # baseline-A rate (same model, same images)
    configs = [
        (f"{ctx.model_name} fp32", big, random_checkpoint(ctx), n, loop_n, "fp32"),
        (f"{ctx.model_name} int8", big, random_checkpoint(ctx), n, 0, "int8"),
    ]
    try:
        dpath, trained = demo_bundle(ctx)
        dckpt = demo_checkpoint() if trained else (ctx.cache / "demo-clip-random-seed0.pt")
        configs.append(
            (
                "demo model fp32" + ("" if trained else " (random init)"),
                dpath,
                dckpt,
                n_demo,
                n_demo // 2,
                "fp32",
            )
        )
    except DemoUnavailable as exc:
        sec.add(f"**Demo model row skipped:** {exc}")
    results = {}
    for label, bundle, ckpt, count, loop, precision in configs:
        ctx.log(f"{label}: {count} images (torch loop on {loop}) ...")
        results[label] = _run(ctx, bundle, ckpt, count, loop, precision)
        if not loop and "torch_sqlite_loop" in results[configs[0][0]]["rates"]:
            results[label]["rates"]["torch_sqlite_loop"] = results[configs[0][0]]["rates"][
                "torch_sqlite_loop"
            ]
            results[label]["torch_loop_from"] = configs[0][0]
        r = results[label]["rates"]
        ctx.log(f"{label}: " + ", ".join(f"{k} {v:.1f}/s" for k, v in r.items()))
    rows = []
    for label, res in results.items():
        r = res["rates"]
        a = r.get("torch_sqlite_loop")
        rows.append(
            [
                f"{label} ({res['n']} images)",
                f"{r['end_to_end_total']:.1f}",
                f"{r['end_to_end_pipeline']:.1f}",
                f"{r['pure_encode']:.1f}",
                f"{r['decode_preprocess_1_thread']:.0f}",
                (f"{a:.1f}" + (" (same as fp32)" if res.get("torch_loop_from") else "")) if a else "–",
                f"{r['end_to_end_total'] / a:.2f}x" if a else "–",
                f"{r['end_to_end_total'] / r['pure_encode'] * 100:.0f}% "
                f"({r['end_to_end_pipeline'] / r['pure_encode'] * 100:.0f}%)",
                f"{_bound(r):.0%}",
            ]
        )
    first = next(iter(results.values()))
    sec.add(
        "Measured by `bench.rebuild_run.run` on demo images (128 px JPEG, demo.shapes seed 0), batch "
        f"{first['batch_size']}, {first['workers']} decode workers, {first['cpus']} CPUs; baseline A's loop "
        f"on the first {loop_n} ({ctx.model_name}) / {n_demo // 2} (demo model) of them (one image at a "
        "time, so its rate does not depend on the count); int8 = the index builder with `precision=int8` "
        "(the bundle's int8 towers). Images/s:",
        table(
            [
                "Model",
                "end to end (total)",
                "end to end (embedding phase)",
                "pure encode",
                "decode+preprocess 1 thread",
                "baseline A loop",
                "total vs A",
                "total (phase) vs pure encode",
                "bound if decode shares the cores",
            ],
            rows,
        ),
        "'total' = the whole `index_builder.build` call (list, hash, decode, embed, HNSW, write, publish); "
        "'embedding phase' = its pipelined read/decode/embed part only. 'bound' = t_encode / (t_encode + "
        "t_decode): pure encode already uses every core, so decoding on the same cores caps end to "
        "end there.",
    )
    sec.goals.extend(rebuild_goals(results))
    sec.plots.append(_plot(ctx, results))
    sec.data["results"] = results
    _scaling_section(ctx, sec, big)
    return sec


def rebuild_goals(results: dict[str, Any]) -> list[Goal]:
    """The goals, from the measured rates alone: end to end vs pure encode (fp32 and int8), int8 vs A."""
    goals = []
    labels = list(results)
    cpus = results[labels[0]]["cpus"]
    for label in labels[:2]:  # the ViT-B-32 fp32 and int8 rows
        r = results[label]["rates"]
        vs_enc = r["end_to_end_total"] / r["pure_encode"]
        ok = vs_enc >= GOAL_VS_ENCODE
        goals.append(
            Goal(
                f"Rebuild end to end vs pure encode ({label})",
                f"≥ {GOAL_VS_ENCODE:.0%}",
                f"{vs_enc:.0%} (embedding phase {r['end_to_end_pipeline'] / r['pure_encode']:.0%})",
                ok,
                ""
                if ok
                else f"short by {GOAL_VS_ENCODE / vs_enc:.2f}x: on {cpus} shared cores decode + preprocess "
                f"({1e3 / r['decode_preprocess_1_thread']:.1f} ms CPU/image) and encode "
                f"({1e3 / r['pure_encode']:.1f} ms/image at full width) add up; the bound is "
                f"~{_bound(r):.0%} of pure encode",
            )
        )
    int8 = results[labels[1]]["rates"] if len(labels) > 1 else {}
    if "torch_sqlite_loop" in int8:
        vs_a = int8["end_to_end_total"] / int8["torch_sqlite_loop"]
        fp32 = results[labels[0]]["rates"]
        goals.append(
            Goal(
                f"Rebuild int8 vs baseline A's torch loop ({labels[1]})",
                f"≥ {GOAL_INT8_VS_A:g}x",
                f"{vs_a:.2f}x ({int8['end_to_end_total']:.1f} vs {int8['torch_sqlite_loop']:.1f} images/s); "
                f"fp32: {fp32['end_to_end_total'] / fp32['torch_sqlite_loop']:.2f}x",
                vs_a >= GOAL_INT8_VS_A,
                ""
                if vs_a >= GOAL_INT8_VS_A
                else f"short by {GOAL_INT8_VS_A / vs_a:.2f}x: int8 pure encode runs at "
                f"{int8['pure_encode']:.1f} images/s",
            )
        )
    return goals


def _scaling_section(ctx: Context, sec: Section, bundle: Any) -> None:
    n = 48 if ctx.quick else 600
    scaling: dict[str, dict[int, dict[str, float]]] = {}
    for precision in ("fp32", "int8"):
        ctx.log(f"step-wise build, {precision}: {n} images with 1 and 2 worker processes ...")
        scaling[precision] = parallel_scaling(
            bundle, n, precision, (1, 2), ctx.scratch(f"parallel-{precision}"), ctx.threads
        )
    rows = []
    for precision, res in scaling.items():
        one, two = res[1], res[2]
        rows.append(
            [
                f"{ctx.model_name} {precision}",
                f"{one['embed']:.1f}",
                f"{two['embed']:.1f}",
                f"{two['embed'] / one['embed'] / 2:.0%}",
                f"{one['total']:.1f}",
                f"{two['total']:.1f}",
                f"{one['embed'] / ctx.threads:.1f}",
            ]
        )
    per_vcpu = scaling["fp32"][1]["embed"] / ctx.threads
    proj = lambda_projection(per_vcpu)
    prow = [
        [
            str(r["workers"]),
            f"{r['worker_rate']:.1f}",
            str(r["batch_images"]),
            str(r["batches"]),
            f"{r['wall_s'] / 60:.0f} min",
            f"{r['gb_s'] / 1e3:.0f}k",
            f"${r['cost_usd']:.2f}",
        ]
        for r in proj
    ]
    per_vcpu8 = scaling["int8"][1]["embed"] / ctx.threads
    cost8 = lambda_projection(per_vcpu8)[0]["cost_usd"]
    sec.add(
        "**Step-wise build** (`index_builder build --parallel P`: plan, P embed worker processes, publish - "
        f"the steps the Step Functions job runs) on {n} demo images, {ctx.threads} CPUs, each worker given "
        f"{ctx.threads}/P cores. Images/s:",
        table(
            [
                "Model",
                "embed phase, 1 worker",
                "2 workers",
                "scaling efficiency",
                "total, 1 worker",
                "2 workers",
                "per vCPU (1 worker)",
            ],
            rows,
        ),
        "Scaling efficiency = rate(2) / (2 x rate(1)); on a 2-core machine the two workers share the same "
        "cores, so this shows the overhead of splitting (process start, encoder load per worker, chunk "
        "outputs), not more hardware.",
        f"**Projection, not a measurement:** a first build of 1M images on Lambda at 3008 MB "
        f"({3008 / LAMBDA_MB_PER_VCPU:.2f} vCPU per worker) from the fp32 per-vCPU rate above "
        f"({per_vcpu:.1f} images/s/vCPU), batches of ~600 s of work or the ItemBatcher byte limit; embed "
        "phase only (listing and the HNSW "
        f"build of 1M vectors in Publish come on top), at ${LAMBDA_GB_S * 1e6:.2f} per 1M GB-s, "
        f"${LAMBDA_REQUEST * 1e6:.2f} per 1M requests and "
        f"${SFN_TRANSITION * 1e3:.3f} per 1k state transitions:",
        table(
            [
                "MaxConcurrency",
                "images/s per worker",
                "images per batch",
                "batches",
                "wall time",
                "GB-s",
                "cost",
            ],
            prow,
        ),
        f"int8 ({per_vcpu8:.1f} images/s/vCPU) would cost ${cost8:.2f}. Lambda's per-vCPU speed is not "
        "this machine's; measure one EmbedFunction batch and set `EmbedRate` accordingly.",
    )
    sec.data["parallel_scaling"] = scaling
    sec.data["lambda_projection"] = proj


def _bound(r: dict[str, float]) -> float:
    """If decoding and encoding share the same cores, end to end can reach at most
    t_encode / (t_encode + t_decode) of pure encode (pure encode already uses every core)."""
    enc, dec = 1.0 / r["pure_encode"], 1.0 / r["decode_preprocess_1_thread"]
    return enc / (enc + dec)


def _plot(ctx: Context, results: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [
        ("end_to_end_total", "end to end (total)"),
        ("pure_encode", "pure encode"),
        ("torch_sqlite_loop", "baseline A loop"),
    ]
    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.8), squeeze=False)
    for ax, (label, res) in zip(axes[0], results.items(), strict=True):
        vals = [res["rates"].get(k, 0.0) for k, _ in keys]
        bars = ax.bar([n for _, n in keys], vals, color=["tab:blue", "tab:gray", "tab:red"])
        for b, v in zip(bars, vals, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.set_ylabel("images/s")
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"Rebuild throughput, {ctx.threads} CPUs")
    fig.tight_layout()
    name = "rebuild.png"
    fig.savefig(ctx.plots / name, dpi=110)
    plt.close(fig)
    return name
