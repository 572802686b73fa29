"""A 1M-image first build on Lambda projected from a measured per-vCPU rate: arithmetic on the public
prices, not a measurement."""

from __future__ import annotations

from typing import Any

# public AWS prices (us-east-1, x86): Lambda per GB-s and per request, Step Functions Standard per transition
LAMBDA_GB_S = 0.0000166667
LAMBDA_REQUEST = 0.20 / 1e6
SFN_TRANSITION = 0.025 / 1000
LAMBDA_MB_PER_VCPU = 1769  # Lambda allots CPU in proportion to memory: 1769 MB = 1 vCPU


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
