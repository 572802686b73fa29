"""Rebuild throughput per model: ``bench.rebuild_run.run`` (end to end, pure encode, baseline A's loop) on
demo images, and its table."""

from __future__ import annotations

from typing import Any

from bench.common import (
    Context,
    DemoUnavailable,
    Section,
    demo_bundle,
    demo_checkpoint,
    random_checkpoint,
    table,
)
from bench.rebuild.goals import bound

# (label, bundle, checkpoint, images, torch-loop images, precision)
Config = tuple[str, Any, Any, int, int, str]


def sizes(quick: bool) -> tuple[int, int, int]:
    """Images per run, baseline A's loop images (the big model), images of the demo-model run."""
    return (48, 24, 48) if quick else (1000, 300, 2000)


def configs(ctx: Context, big: Any) -> tuple[list[Config], list[str]]:
    """The big model in fp32 and int8, and the demo model (else a note why not). The int8 run reuses the
    fp32 run's baseline-A rate (same model, same images)."""
    n, loop_n, n_demo = sizes(ctx.quick)
    out: list[Config] = [
        (f"{ctx.model_name} fp32", big, random_checkpoint(ctx), n, loop_n, "fp32"),
        (f"{ctx.model_name} int8", big, random_checkpoint(ctx), n, 0, "int8"),
    ]
    try:
        dpath, trained = demo_bundle(ctx)
    except DemoUnavailable as exc:
        return out, [f"**Demo model row skipped:** {exc}"]
    dckpt = demo_checkpoint() if trained else (ctx.cache / "demo-clip-random-seed0.pt")
    label = "demo model fp32" + ("" if trained else " (random init)")
    out.append((label, dpath, dckpt, n_demo, n_demo // 2, "fp32"))
    return out, []


def measure(ctx: Context, configs: list[Config]) -> dict[str, Any]:
    """``bench.rebuild_run.run``'s result per config label."""
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
    return results


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


def add_table(sec: Section, ctx: Context, results: dict[str, Any]) -> None:
    """Images/s per model: end to end (total, embedding phase), pure encode, decode, baseline A."""
    _, loop_n, n_demo = sizes(ctx.quick)
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
                f"{bound(r):.0%}",
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
