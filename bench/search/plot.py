"""The search plot: recall@10 against p50 latency per collection (HNSW per ef, numpy exact, baseline A)."""

from __future__ import annotations

from typing import Any

from bench.common import Context


def plot(ctx: Context, results: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5))
    markers = iter("osD^v<>")
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3)
    for r in results:
        hn = r.get("hnsw") or {}
        if not hn and "numpy" not in r:
            continue
        mk = next(markers, "o")
        c = next(colors)
        efs = sorted(hn)
        ax.plot(
            [hn[e]["p50"] * 1e3 for e in efs],
            [hn[e]["recall"] for e in efs],
            marker=mk,
            color=c,
            label=f"HNSW, {r['name']}" if hn else f"{r['name']} (no HNSW: exact only)",
        )
        for e in efs:
            ax.annotate(
                f"ef={e}",
                (hn[e]["p50"] * 1e3, hn[e]["recall"]),
                fontsize=6,
                xytext=(3, -8),
                textcoords="offset points",
            )
        if "numpy" in r:
            ax.scatter(
                [r["numpy"]["p50"] * 1e3],
                [r["numpy"]["recall"]],
                marker=mk,
                facecolors="none",
                edgecolors=c,
                s=60,
            )
        if "sqlite" in r:
            ax.scatter([r["sqlite"]["p50"] * 1e3], [r["sqlite"]["recall"]], marker="x", color=c, s=60)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per query, ms (log)")
    ax.set_ylabel("recall@10")
    ax.set_title("Search: latency vs recall (hollow = numpy exact, x = baseline A SQLite scan)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    name = "search_latency_recall.png"
    fig.savefig(ctx.plots / name, dpi=110)
    plt.close(fig)
    return name
