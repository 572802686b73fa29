"""The rebuild plot: images/s end to end, pure encode and baseline A's loop, one panel per model."""

from __future__ import annotations

from typing import Any

from bench.common import Context


def plot(ctx: Context, results: dict[str, Any]) -> str:
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
