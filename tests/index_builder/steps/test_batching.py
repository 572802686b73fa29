"""Batch sizing: a worker's time budget, the Step Functions batch byte limit, a chunk multiple."""

from __future__ import annotations

import re
from pathlib import Path

from index_builder.steps.batching import MAX_BATCH_BYTES, batch_items_for


def test_batches_fit_the_item_batcher_byte_limit() -> None:
    assert batch_items_for(10_000, rate=20, budget_s=600, chunk=64) == 12_032  # 600 s of work, chunk multiple
    assert batch_items_for(10_000, rate=20, budget_s=600, chunk=64, max_items=1290) == 1280
    assert batch_items_for(10_000, rate=20, budget_s=600, chunk=64, workers=2, max_items=1290) == 1216
    assert batch_items_for(100, rate=20, budget_s=600, chunk=4, workers=2) == 16  # ~4 batches per worker
    assert batch_items_for(100, rate=20, budget_s=600, chunk=64, max_items=10) == 64  # never below one chunk


def test_the_byte_limit_is_the_item_batchers() -> None:
    """template.yaml's ItemBatcher.MaxInputBytesPerBatch (Step Functions refuses more than 256 KiB)."""
    template = (Path(__file__).parents[3] / "template.yaml").read_text()
    assert re.findall(r"MaxInputBytesPerBatch: (\d+)", template) == [str(MAX_BATCH_BYTES)]
    assert MAX_BATCH_BYTES <= 256 * 1024
