"""The search benchmark's parameters: the HNSW settings, the goals, the time budgets of the 1M row."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from bench.vectors import CLUSTERS, SPREAD

M = 16
EF_CONSTRUCTION = 100
EFS = (16, 32, 64, 128, 256, 512)
K = 10
GOAL_SPEEDUP = 1000.0
GOAL_RECALL = 0.99
BUILD_BUDGET_S = 600.0  # the 1M build runs only if the 100k build rate says it fits (~10 min)
SQLITE_BUDGET_S = 240.0  # baseline A at 1M runs only if insert + queries are estimated to fit
TEMPLATES = (
    "a {colour} {shape}",
    "{colour} {shape}",
    "the {colour} {shape}",
    "a photo of a {colour} {shape}",
    "an image of a {colour} {shape}",
)  # the demo queries: every class caption in these phrasings


def sizes(quick: bool) -> tuple[list[int], int]:
    """The synthetic collection sizes and the number of queries."""
    return ([1000, 5000] if quick else [10_000, 100_000, 1_000_000]), (200 if quick else 1000)


def size_name(n: int) -> str:
    """10000 -> '10k', 1000000 -> '1M'."""
    return (
        f"{n // 1_000_000}M"
        if n >= 1_000_000 and n % 1_000_000 == 0
        else (f"{n // 1000}k" if n % 1000 == 0 else str(n))
    )


def as_data(queries: int) -> dict[str, Any]:
    """The parameters as stored with the results."""
    return {
        "M": M,
        "ef_construction": EF_CONSTRUCTION,
        "efs": EFS,
        "k": K,
        "spread": SPREAD,
        "clusters": CLUSTERS,
        "queries": queries,
        "cpu_threads": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
    }
