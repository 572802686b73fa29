"""bench.scale: the incremental publish is measured with the full build's layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bench.scale as scale


def test_incremental_publish_keeps_the_full_builds_shard_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_write(root: Path, vid: str, data: np.ndarray, ids: list[int], threads: int, **kw: Any) -> float:
        calls.append({"vid": vid, "ids": ids, **kw})
        return 1.0

    monkeypatch.setattr(scale, "write_index", fake_write)
    data = np.zeros((200, 512), dtype=np.float32)
    scale._incremental(tmp_path, data, 200, 1, 7, shard_size=100)
    (call,) = calls
    assert call["shard_size"] == 100  # another shard size re-plans the tail: not a 1% change
    assert call["duplicates"] is True  # the CLI's default, as the full build
    assert sum(1 for i, x in enumerate(call["ids"]) if i != x) == 2  # 1% of the items replaced
