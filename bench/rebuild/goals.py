"""The rebuild goals, from the measured rates alone, and the bound decoding on shared cores puts on them."""

from __future__ import annotations

from typing import Any

from bench.common import Goal

# Issue 13's restated goals: fp32 cannot be 3x torch eager on a CPU where torch already runs near the
# fp32 matmul limit (see the encode section), so the rebuild is held to what it controls: end to end close
# to pure encode for both precisions, and int8 (the builder's default when the service runs int8) 4x torch.
GOAL_VS_ENCODE = 0.90
GOAL_INT8_VS_A = 4.0


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
                f"~{bound(r):.0%} of pure encode",
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


def bound(r: dict[str, float]) -> float:
    """If decoding and encoding share the same cores, end to end can reach at most
    t_encode / (t_encode + t_decode) of pure encode (pure encode already uses every core)."""
    enc, dec = 1.0 / r["pure_encode"], 1.0 / r["decode_preprocess_1_thread"]
    return enc / (enc + dec)
