"""bench.rebuild_run runs end to end on a handful of images (the real numbers come from `make bench-build`)."""

from __future__ import annotations

from pathlib import Path

import demo
from bench.rebuild_run import format_table, run


def test_bench_run_small(demo_bundle: Path, tmp_path: Path) -> None:
    report = run(
        24,
        bundle=demo_bundle,
        pretrained=demo.CHECKPOINT_PATH,
        size=64,
        batch_size=8,
        workers=2,
        torch_loop_n=6,
        work_dir=tmp_path,
        quiet=True,
        repeat=2,
        runtime_encode=True,
    )
    assert report["n"] == 24 and report["torch_loop_n"] == 6 and report["repeat"] == 2
    assert set(report["rates"]) == {
        "end_to_end_pipeline",
        "end_to_end_total",
        "pure_encode",
        "pure_encode_runtime",
        "decode_preprocess_1_thread",
        "torch_sqlite_loop",
    }
    assert all(rate > 0 for rate in report["rates"].values())
    assert report["end_to_end_vs_pure_encode"] > 0 and report["speedup_vs_torch_sqlite_loop"] > 0
    assert (
        report["cpu_ms_per_image"]["end_to_end_total"] > 0 and report["cpu_ms_per_image"]["pure_encode"] > 0
    )
    table = format_table(report)
    assert "pure encode" in table and "original loop" in table
    assert list(tmp_path.iterdir()) == []  # temporary files removed
