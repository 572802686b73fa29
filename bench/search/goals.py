"""The search goal (HNSW vs baseline A at 100k: speed-up and recall@10) and, above 100k, the smallest ef
that reaches the recall goal."""

from __future__ import annotations

from typing import Any

from bench.common import Goal, Section, ms, ratio_text
from bench.search.params import GOAL_RECALL, GOAL_SPEEDUP, size_name


def best_ef(r: dict[str, Any]) -> tuple[int | None, dict[str, Any] | None]:
    """Smallest ef reaching the recall goal (else the most accurate one)."""
    hn = r.get("hnsw") or {}
    for ef in sorted(hn):
        if hn[ef]["recall"] >= GOAL_RECALL:
            return ef, hn[ef]
    if not hn:
        return None, None
    ef = max(hn, key=lambda e: hn[e]["recall"])
    return ef, hn[ef]


def add_goals(sec: Section, results: list[dict[str, Any]], goal_n: int) -> None:
    """The goal on the synthetic collection of ``goal_n`` vectors, and a line per collection over 100k."""
    r100 = next((r for r in results if r["n"] == goal_n and not r.get("real")), None)
    if r100 and "sqlite" in r100:
        ef, e = best_ef(r100)
        sp = r100["sqlite"]["p50"] / e["p50"]
        ok = sp >= GOAL_SPEEDUP and e["recall"] >= GOAL_RECALL
        why = ""
        if not ok:
            parts = []
            if sp < GOAL_SPEEDUP:
                parts.append(
                    f"speed-up short by {GOAL_SPEEDUP / sp:.1f}x: the service's per-query Python path "
                    f"(SearchIndex.search: validation, ef gate, item copies) is {ms(e['p50'])} vs "
                    f"{ms(e['raw_p50'])} for raw hnswlib"
                )
            if e["recall"] < GOAL_RECALL:
                parts.append(f"recall {e['recall']:.4f} < {GOAL_RECALL} at every ef measured")
            why = "; ".join(parts)
        sec.goals.append(
            Goal(
                f"Search vs baseline A at {size_name(r100['n'])}",
                f"≥ {GOAL_SPEEDUP:,.0f}x, recall@10 ≥ {GOAL_RECALL}",
                f"{ratio_text(sp)} at ef={ef} (recall {e['recall']:.4f}; "
                f"p50 {ms(e['p50'])} vs {ms(r100['sqlite']['p50'])})",
                ok,
                why,
            )
        )
    for r in results:
        ef, e = best_ef(r)
        if e is not None and r["n"] > 100_000:
            sec.add(
                f"At {r['name']}: "
                + (
                    f"recall@10 ≥ {GOAL_RECALL} first at ef={ef} (p50 {ms(e['p50'])})."
                    if e["recall"] >= GOAL_RECALL
                    else f"no measured ef reaches recall@10 {GOAL_RECALL} (best {e['recall']:.4f} "
                    f"at ef={ef}); a larger ef or ef_construction/M is needed at this size."
                )
            )
