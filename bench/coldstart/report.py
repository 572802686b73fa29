"""The cold-start section's table, goal and plot."""

from __future__ import annotations

import statistics
from typing import Any

from bench.coldstart.processes import QUERY, VARIANTS
from bench.common import Context, Goal, Section, fmt, mib, table

GOAL_SPEEDUP = 8.0
GOAL_MEMORY = 0.25


def med(rs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rs)


def add_report(
    sec: Section,
    ctx: Context,
    ours: dict[str, list[dict[str, Any]]],
    base: list[dict[str, Any]],
    parts: dict[str, Any],
    repeats: int,
) -> None:
    b_s, b_m = med(base, "seconds"), med(base, "peak_rss")
    rows = []
    for key, rs in ours.items():
        precision, variant = key.split()
        t = rs[0]["timings"]
        label = f"ours ONNX {precision}: {VARIANTS[variant][0]}"
        if variant == "shipped":
            label = f"**{label}**"
        rows.append(
            [
                label,
                f"{med(rs, 'seconds'):.2f} s",
                f"{b_s / med(rs, 'seconds'):.1f}x",
                mib(med(rs, "peak_rss")),
                f"{med(rs, 'peak_rss') / b_m:.2f}",
                f"{med(rs, 'image_query') * 1e3:.0f} ms",
                f"interpreter {med(rs, 'interpreter'):.2f} s · import+init {med(rs, 'to_import_done'):.2f} s "
                f"(model {fmt(t.get('model_load_ms', float('nan')) / 1e3)} s, index "
                f"{fmt(t.get('index_load_ms', float('nan')) / 1e3)} s) · first invoke "
                f"{med(rs, 'first_invoke') * 1e3:.0f} ms",
            ]
        )
    rows.append(
        [
            "baseline B: open_clip torch + FastAPI (uvicorn), checkpoint loaded from a local file",
            f"{b_s:.2f} s",
            "1.00x",
            mib(b_m),
            "1.00",
            f"{med(base, 'image_query') * 1e3:.0f} ms",
            "until the first 200 from POST /embeddings",
        ]
    )
    sec.add(
        f"{ctx.model_name} (random-init weights saved as a checkpoint file: the bundle is exported from it "
        f"and baseline B loads it with `create_model_and_transforms(pretrained=path)`), {ctx.threads} "
        f"threads; median of {repeats} cold starts each, interleaved (after one untimed start of each, so "
        "the page cache is warm for both); ours answers `POST /search` with "
        f'`{{"text": "{QUERY}", "k": 5}}` over a 300-vector index, baseline B answers `POST /embeddings` '
        "with the same text. Local files, no S3. Peak memory = VmHWM of the process after the text answer. "
        "'then image query' = the latency of an image query sent right after the first text answer (ours: "
        "`POST /search` with a 64×64 PNG; B: `POST /embeddings`).",
        table(
            [
                "Process",
                "start → first answer",
                "faster than B",
                "peak RSS",
                "memory vs B",
                "then image query",
                "breakdown",
            ],
            rows,
            align="lrrrrrl",
        ),
        "Where ours spends its start-up (each step timed on its own, warm page cache, median of "
        f"{parts['repeats']}):",
        table(["Step", "time"], [[k, f"{v * 1e3:.0f} ms"] for k, v in parts["steps"].items()]),
        "Heaviest top-level imports (`python -X importtime`, cumulative; the flag adds overhead): "
        + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in parts["imports"].items())
        + ".",
    )
    s32 = b_s / med(ours["fp32 shipped"], "seconds")
    m32 = med(ours["fp32 shipped"], "peak_rss") / b_m
    s8 = b_s / med(ours["int8 shipped"], "seconds")
    m8 = med(ours["int8 shipped"], "peak_rss") / b_m
    ok = min(s32, s8) >= GOAL_SPEEDUP and max(m32, m8) <= GOAL_MEMORY
    why = []
    if min(s32, s8) < GOAL_SPEEDUP:
        st = parts["steps"]
        pick = {k.split(" (")[0].split(" of ")[0]: v for k, v in st.items()}
        why.append(
            f"speed short by {GOAL_SPEEDUP / min(s32, s8):.1f}x: ours is bounded by fixed costs — "
            + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in pick.items())
        )
    if max(m32, m8) > GOAL_MEMORY:
        why.append(f"memory {max(m32, m8):.2f} of B's > {GOAL_MEMORY}")
    img = {p: med(ours[f"{p} shipped"], "image_query") for p in ("fp32", "int8")}
    lazy = {p: med(ours[f"{p} lazy-visual"], "image_query") for p in ("fp32", "int8")}
    sec.goals.append(
        Goal(
            "Cold start vs baseline B (as shipped)",
            f"≥ {GOAL_SPEEDUP:.0f}x faster, ≤ {GOAL_MEMORY} of its peak memory",
            f"{s32:.1f}x faster, {m32:.2f} of the memory (fp32); int8: "
            f"{s8:.1f}x, {m8:.2f}; first image query right after: {img['fp32'] * 1e3:.0f} / "
            f"{img['int8'] * 1e3:.0f} ms (visual loaded on the request: {lazy['fp32'] * 1e3:.0f} / "
            f"{lazy['int8'] * 1e3:.0f} ms)",
            ok,
            "; ".join(why),
        )
    )


def plot(ctx: Context, ours: dict[str, list[dict[str, Any]]], base: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [*(f"ours {p}" for p in ours), "baseline B"]
    secs = [statistics.median(r["seconds"] for r in rs) for rs in ours.values()]
    secs.append(statistics.median(r["seconds"] for r in base))
    mem = [statistics.median(r["peak_rss"] for r in rs) / 2**20 for rs in ours.values()]
    mem.append(statistics.median(r["peak_rss"] for r in base) / 2**20)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 5))
    colors = [*("tab:blue" if p.startswith("fp32") else "tab:green" for p in ours), "tab:red"]
    for ax, vals, title, unit in ((a1, secs, "start → first answer", "s"), (a2, mem, "peak RSS", "MiB")):
        bars = ax.bar(labels, vals, color=colors)
        for b, v in zip(bars, vals, strict=True):
            ax.text(
                b.get_x() + b.get_width() / 2,
                v,
                f"{v:.2f}" if unit == "s" else f"{v:.0f}",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_title(f"{title} ({unit})")
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    fig.suptitle(f"Cold start, {ctx.model_name}, {ctx.threads} threads")
    fig.tight_layout()
    name = "coldstart.png"
    fig.savefig(ctx.plots / name, dpi=110)
    plt.close(fig)
    return name
