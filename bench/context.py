"""Settings shared by all measures: where the repository, caches and plots are, the benchmark model (the
tiny one with --quick) and the Context every measure's ``run`` gets."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handler.core.cpus import usable_cpus

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_WORK = BENCH_DIR / "out"  # gitignored: caches (bundles, checkpoints, images) and scratch
PLOTS_DIR = BENCH_DIR / "plots"

# A tiny OpenCLIP architecture for --quick (random init): same code paths, a fraction of the compute.
QUICK_MODEL_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
QUICK_MODEL_NAME = "bench-tiny-clip"
FULL_MODEL_NAME = "ViT-B-32"


cpu_count = usable_cpus  # cores this process may use (what the runtime's default_threads() uses too)


@dataclass
class Context:
    quick: bool
    work: Path
    plots: Path
    threads: int = field(default_factory=cpu_count)
    log: Callable[[str], None] = print

    @property
    def model_name(self) -> str:
        return QUICK_MODEL_NAME if self.quick else FULL_MODEL_NAME

    @property
    def cache(self) -> Path:
        p = self.work / "cache"
        p.mkdir(parents=True, exist_ok=True)
        return p

    def scratch(self, name: str) -> Path:
        p = self.work / "scratch" / name
        if p.exists():
            shutil.rmtree(p)
        p.mkdir(parents=True)
        return p

    def to_json(self) -> dict[str, Any]:
        return {
            "quick": self.quick,
            "work": str(self.work),
            "plots": str(self.plots),
            "threads": self.threads,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Context:
        return cls(quick=d["quick"], work=Path(d["work"]), plots=Path(d["plots"]), threads=int(d["threads"]))
