"""bench.rebuild.projection.lambda_projection: the 1M-on-Lambda arithmetic."""

from __future__ import annotations

import pytest

from bench.rebuild.projection import LAMBDA_GB_S, lambda_projection


def test_projection_scales_with_workers_and_costs_the_same() -> None:
    rows = lambda_projection(10.0, images=1_000_000, memory_mb=1769, workers=(10, 100))
    few, many = rows
    assert few["worker_rate"] == pytest.approx(10.0)  # 1769 MB = 1 vCPU
    assert few["batches"] * few["batch_images"] >= 1_000_000
    assert few["wall_s"] / many["wall_s"] == pytest.approx(10.0, rel=0.05)
    assert few["gb_s"] == many["gb_s"] == pytest.approx(1_000_000 / 10.0 * 1769 / 1024)
    assert few["cost_usd"] == many["cost_usd"] > few["gb_s"] * LAMBDA_GB_S
