"""How many images one embed batch holds: a worker's time budget, the Step Functions batch byte limit,
and a multiple of the checkpoint chunk."""

from __future__ import annotations

import math

__all__ = ["DEFAULT_CHUNK_ITEMS", "MAX_BATCH_BYTES", "batch_items_for"]

DEFAULT_CHUNK_ITEMS = 64  # images per checkpointed output object (also the batch size granule)
MAX_BATCH_BYTES = 245_760  # template.yaml ItemBatcher.MaxInputBytesPerBatch (Step Functions allows 256 KiB)


def batch_items_for(
    todo: int,
    *,
    rate: float,
    budget_s: float,
    chunk: int,
    workers: int | None = None,
    max_items: int | None = None,
) -> int:
    """Images per batch: what one worker embeds in ``budget_s`` at ``rate`` images/s, at most ``max_items``
    (what fits the batch byte limit), and (when ``workers`` is given) small enough for ~4 batches per
    worker; a multiple of ``chunk``."""
    n = max(1, int(rate * budget_s))
    if workers:
        n = min(n, math.ceil(max(1, todo) / (4 * workers)))
    if max_items:
        n = min(n, max_items)
        if n >= chunk:
            return n // chunk * chunk
    return max(chunk, math.ceil(n / chunk) * chunk)
