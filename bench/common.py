"""Shared pieces of the benchmark suite: results (sections, goals, tables), timing and memory; and, as the
one import point of the measures, the settings (bench.context), the machine (bench.machine) and the cached
artifacts (bench.artifacts).

Every measure module exposes ``run(ctx: Context) -> Section``. The runner (``python -m bench``) runs each
measure in a fresh Python process (``python -m bench.worker NAME``) so that imports, thread pools and
memory of one measure never leak into another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.artifacts import (
    DemoUnavailable,
    code_hash,
    demo_bundle,
    demo_checkpoint,
    demo_images,
    export_bundle,
    image_labels,
    model_config_file,
    random_checkpoint,
    register_quick_model,
)
from bench.context import (
    BENCH_DIR,
    DEFAULT_WORK,
    FULL_MODEL_NAME,
    PLOTS_DIR,
    QUICK_MODEL_CONFIG,
    QUICK_MODEL_NAME,
    REPO,
    Context,
    cpu_count,
)
from bench.machine import busy_processes, cpu_busy, load_average, machine_info, wait_until_quiet

__all__ = [
    "BENCH_DIR",
    "DEFAULT_WORK",
    "FULL_MODEL_NAME",
    "PLOTS_DIR",
    "QUICK_MODEL_CONFIG",
    "QUICK_MODEL_NAME",
    "REPO",
    "Context",
    "DemoUnavailable",
    "Goal",
    "Section",
    "Timing",
    "busy_processes",
    "code_hash",
    "cpu_busy",
    "cpu_count",
    "demo_bundle",
    "demo_checkpoint",
    "demo_images",
    "dir_size",
    "export_bundle",
    "fmt",
    "image_labels",
    "load_average",
    "machine_info",
    "mib",
    "model_config_file",
    "ms",
    "peak_rss_bytes",
    "random_checkpoint",
    "ratio_text",
    "register_quick_model",
    "rss_bytes",
    "table",
    "time_fn",
    "timed",
    "wait_until_quiet",
]


# -- results -----------------------------------------------------------------------------------------------
@dataclass
class Goal:
    """One goal row: what was asked, what was measured, whether it is met, and (if not) why."""

    name: str
    target: str
    measured: str
    met: bool | None  # None: not measurable in this run
    why: str = ""

    @property
    def status(self) -> str:
        return "n/a" if self.met is None else ("met" if self.met else "**missed**")


@dataclass
class Section:
    key: str
    title: str
    body: list[str] = field(default_factory=list)  # markdown blocks, in order
    goals: list[Goal] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)  # file names under the plots dir
    data: dict[str, Any] = field(default_factory=dict)  # raw numbers (kept in the report's data block)
    seconds: float = 0.0
    load: dict[str, Any] = field(default_factory=dict)

    def add(self, *blocks: str) -> None:
        self.body.extend(blocks)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Section:
        d = dict(d)
        d["goals"] = [Goal(**g) for g in d.get("goals", [])]
        return cls(**d)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A markdown table; ``align`` is one character per column (l/r/c), default: first left, rest right."""
    align = align or ("l" + "r" * (len(headers) - 1))
    marks = {"l": ":--", "r": "--:", "c": ":-:"}
    lines = [
        "| " + " | ".join(str(h) for h in headers) + " |",
        "| " + " | ".join(marks[a] for a in align) + " |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:  # NaN
            return "–"
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        if a >= 0.01:
            return f"{v:.3f}"
        return f"{v:.2e}"
    return str(v).replace("|", "\\|")


def ms(seconds: float) -> str:
    return fmt(seconds * 1e3) + " ms"


def mib(n_bytes: float) -> str:
    return fmt(n_bytes / 2**20) + " MiB"


# -- timing ------------------------------------------------------------------------------------------------
@dataclass
class Timing:
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    def pct(self, q: float) -> float:
        xs = sorted(self.samples)
        if len(xs) == 1:
            return xs[0]
        pos = (len(xs) - 1) * q / 100.0
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    def to_json(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.min, "p90": self.pct(90), "n": len(self.samples)}


def time_fn(fn: Callable[[], Any], *, runs: int, warmup: int = 2, max_seconds: float | None = None) -> Timing:
    """Median-of-N timing: ``warmup`` untimed calls, then up to ``runs`` timed calls (stopping early, after
    at least 3, once ``max_seconds`` of timed calls have elapsed)."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    started = time.perf_counter()
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        if max_seconds is not None and len(samples) >= 3 and time.perf_counter() - started > max_seconds:
            break
    return Timing(samples)


# -- memory ------------------------------------------------------------------------------------------------
def rss_bytes() -> int:
    """Current resident set size of this process (VmRSS)."""
    return _proc_status_kb("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (VmHWM)."""
    return _proc_status_kb("VmHWM") * 1024


def _proc_status_kb(key: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


@contextlib.contextmanager
def timed(label: str, ctx: Context) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    ctx.log(f"  {label}: {time.perf_counter() - t0:.1f}s")


def ratio_text(x: float) -> str:
    return f"{x:.2f}x" if x < 100 else f"{x:,.0f}x"
