"""The step-wise build (plan -> embed worker processes -> publish, what the Step Functions job runs) with 1
and 2 local worker processes, and from its per-vCPU rate the 1M-on-Lambda projection."""

from __future__ import annotations

from typing import Any

from bench.common import Context, Section, table
from bench.rebuild.projection import (
    LAMBDA_GB_S,
    LAMBDA_MB_PER_VCPU,
    LAMBDA_REQUEST,
    SFN_TRANSITION,
    lambda_projection,
)

Scaling = dict[str, dict[int, dict[str, float]]]


def parallel_scaling(
    bundle: Any, n: int, precision: str, processes: tuple[int, ...], scratch: Any, threads: int
) -> dict[int, dict[str, float]]:
    """images/s of ``build --parallel P`` (plan + embed workers + publish) on ``n`` demo images, per P.
    'embed' = the worker phase (process start and encoder load included), 'total' = the whole call."""
    from pathlib import Path

    from demo.shapes import write_collection
    from index_builder.options import BuildOptions
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


def measure(ctx: Context, bundle: Any) -> tuple[int, Scaling]:
    """``n`` and, per precision, :func:`parallel_scaling` with 1 and 2 worker processes."""
    n = 48 if ctx.quick else 600
    scaling: Scaling = {}
    for precision in ("fp32", "int8"):
        ctx.log(f"step-wise build, {precision}: {n} images with 1 and 2 worker processes ...")
        scaling[precision] = parallel_scaling(
            bundle, n, precision, (1, 2), ctx.scratch(f"parallel-{precision}"), ctx.threads
        )
    return n, scaling


def add_report(sec: Section, ctx: Context, n: int, scaling: Scaling) -> None:
    """The scaling table, then the projection from the fp32 per-vCPU rate (int8's cost in a line)."""
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
