"""Shared pieces of the benchmark suite: settings, machine info, timing, memory, results, cached artifacts.

Every measure module exposes ``run(ctx: Context) -> Section``. The runner (``python -m bench``) runs each
measure in a fresh Python process (``python -m bench.worker NAME``) so that imports, thread pools and
memory of one measure never leak into another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
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


# -- settings shared by all measures -----------------------------------------------------------------------
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


# -- machine -----------------------------------------------------------------------------------------------
def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover
        return (float("nan"),) * 3


def cpu_busy(window: float = 2.0) -> float:
    """Fraction of all CPUs busy over the next ``window`` seconds (/proc/stat), whoever uses them."""

    def snap() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        t0, i0 = snap()
        time.sleep(window)
        t1, i1 = snap()
    except (OSError, ValueError, IndexError):
        return 0.0
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_until_quiet(max_wait: float, threshold: float = 0.25, log: Callable[[str], None] = print) -> float:
    """Wait (up to ``max_wait`` s) until other processes leave the CPUs mostly idle; returns the busy
    fraction seen last. Benchmarks on a shared machine are only as good as the quiet they get."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy()
    said = False
    while busy > threshold and time.monotonic() < deadline:
        if not said:
            log(f"  waiting for a quiet machine (CPUs {busy:.0%} busy; up to {max_wait:.0f}s) ...")
            said = True
        time.sleep(5)
        busy = cpu_busy()
    return busy


def busy_processes(min_cpu: float = 20.0) -> list[str]:
    """Other processes using CPU right now (ps %CPU over their lifetime), to explain noisy numbers."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pid,pcpu,etimes,args", "--sort=-pcpu"], capture_output=True, text=True, timeout=5
        ).stdout.splitlines()[1:]
    except (OSError, subprocess.SubprocessError):
        return []
    me = {os.getpid(), os.getppid()}
    busy = []
    for line in out:
        parts = line.split(None, 3)
        if len(parts) < 4:
            continue
        pid, pcpu, etimes, args = int(parts[0]), float(parts[1]), int(parts[2]), parts[3]
        if pid in me or pcpu < min_cpu or etimes < 5 or "bench.worker" in args or " ps " in f" {args} ":
            continue
        busy.append(f"{args[:70]} ({pcpu:.0f}% CPU)")
    return busy[:5]


def machine_info(threads: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "model_name": platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "threads": threads,
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(
            (k.strip(), v.strip())
            for k, v in (line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        )
        info["model_name"] = fields.get("Model name", info["model_name"])
        cores = int(fields.get("Core(s) per socket", 0)) * int(fields.get("Socket(s)", 1))
        info["cores"] = cores or info["cores"]
        info["cpus"] = int(fields.get("CPU(s)", os.cpu_count() or 0))
        flags = set(fields.get("Flags", "").split())
        info["isa"] = [
            f
            for f in (
                "avx2",
                "avx512f",
                "avx512_vnni",
                "avx_vnni",
                "avx512_bf16",
                "amx_int8",
                "amx_bf16",
                "avx512_fp16",
            )
            if f in flags
        ]
        info["hypervisor"] = fields.get("Hypervisor vendor")
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    try:
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        info["memory_gib"] = round(mem_kb / 2**20, 1)
    except (OSError, AttributeError):
        pass
    info["python"] = platform.python_version()
    info["platform"] = platform.platform()
    info["versions"] = {}
    for dist in ("torch", "open_clip_torch", "onnxruntime", "onnx", "hnswlib", "numpy", "fastapi"):
        try:
            info["versions"][dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info["versions"][dist] = None
    return info


# -- cached artifacts ----------------------------------------------------------------------------------------
def code_hash(*paths: str) -> str:
    """Hash of source files (relative to the repo) whose change must invalidate a cached artifact."""
    h = hashlib.sha256()
    for rel in paths:
        for p in sorted((REPO / rel).rglob("*.py")) if (REPO / rel).is_dir() else [REPO / rel]:
            if p.is_file():
                h.update(str(p.relative_to(REPO)).encode())
                h.update(p.read_bytes())
    for dist in ("torch", "open_clip_torch", "onnx", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            h.update(f"{dist}={metadata.version(dist)}".encode())
    return h.hexdigest()[:12]


def register_quick_model(cache: Path) -> str:
    import open_clip

    cfg = cache / f"{QUICK_MODEL_NAME}.json"
    if not cfg.is_file() or json.loads(cfg.read_text()) != QUICK_MODEL_CONFIG:
        cfg.write_text(json.dumps(QUICK_MODEL_CONFIG))
    if open_clip.get_model_config(QUICK_MODEL_NAME) != QUICK_MODEL_CONFIG:
        open_clip.add_model_config(cfg)
    return QUICK_MODEL_NAME


def model_config_file(ctx: Context) -> Path | None:
    """The custom config file to pass to `python -m export --model-config` (quick mode), else None."""
    if ctx.model_name == QUICK_MODEL_NAME:
        register_quick_model(ctx.cache)
        return ctx.cache / f"{QUICK_MODEL_NAME}.json"
    return None


def random_checkpoint(ctx: Context, name: str | None = None, seed: int = 0) -> Path:
    """A random-init checkpoint of the benchmark architecture (seeded; cached)."""
    name = name or ctx.model_name
    path = ctx.cache / f"{name}-random-seed{seed}.pt"
    if not path.is_file():
        import open_clip
        import torch

        if name == QUICK_MODEL_NAME:
            register_quick_model(ctx.cache)
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    return path


def export_bundle(
    ctx: Context,
    *,
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    model: str | None = None,
    config: Path | None = None,
    checkpoint: Path | None = None,
    tag: str | None = None,
    extra_args: Sequence[str] = (),
) -> Path:
    """Export a bundle with the project's exporter (`python -m export`), cached by inputs and exporter code.
    ``extra_args`` go to the exporter as they are (e.g. ``--fixed-length-text``).

    Default: the benchmark architecture (ViT-B-32, or the tiny model with --quick), random init (seed 0).
    """
    model = model or ctx.model_name
    if config is None and model == ctx.model_name:
        config = model_config_file(ctx)
    if checkpoint is None:
        checkpoint = random_checkpoint(ctx, model)
    # Always all three precisions: one cached bundle serves every measure (the variants are small to make).
    precisions = ["fp32", "fp16", "int8"]
    key = hashlib.sha256(
        json.dumps(
            [
                model,
                str(config),
                _file_key(checkpoint),
                precisions,
                *extra_args,
                code_hash("export", "handler/core/bundle.py", "handler/core/encoders.py"),
            ]
        ).encode()
    ).hexdigest()[:12]
    out = ctx.cache / "bundles" / f"{tag or model}-{key}"
    if (out / "manifest.json").is_file():
        return out
    cmd = [
        sys.executable,
        "-m",
        "export",
        "--model",
        model,
        "--pretrained",
        str(checkpoint),
        "--out",
        str(out),
        "--precision",
        *precisions,
        "--force",
        "--quiet",
        *extra_args,
    ]
    if config is not None:
        cmd[3:5] = ["--model-config", str(config)]
    ctx.log(f"  exporting {tag or model} bundle ({' '.join(precisions)}) ...")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"export failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    ctx.log(f"  exported in {time.perf_counter() - t0:.0f}s")
    return out


def _file_key(path: Path) -> str:
    st = Path(path).stat()
    return f"{Path(path).name}:{st.st_size}:{int(st.st_mtime)}"


def demo_checkpoint() -> Path | None:
    """The committed demo model checkpoint, if present."""
    import demo

    return demo.CHECKPOINT_PATH if demo.CHECKPOINT_PATH.is_file() else None


class DemoUnavailable(RuntimeError):
    """The demo model could not be exported (its rows are skipped, with this message in the report)."""


def demo_bundle(ctx: Context, precisions: Sequence[str] = ("fp32", "fp16", "int8")) -> tuple[Path, bool]:
    """The demo model's bundle and whether it holds the trained weights (False: random init stand-in,
    because demo/model/demo-clip.pt is not there). Raises DemoUnavailable when the export fails."""
    import demo

    ckpt = demo_checkpoint()
    trained = ckpt is not None
    if ckpt is None:
        import open_clip
        import torch

        ckpt = ctx.cache / "demo-clip-random-seed0.pt"
        if not ckpt.is_file():
            open_clip.add_model_config(demo.CONFIG_PATH)
            torch.manual_seed(0)
            torch.save(open_clip.create_model(demo.MODEL_NAME, pretrained=None).state_dict(), ckpt)
    try:
        path = export_bundle(
            ctx,
            precisions=precisions,
            model=demo.MODEL_NAME,
            config=demo.CONFIG_PATH,
            checkpoint=ckpt,
            tag="demo-clip" if trained else "demo-clip-random",
        )
    except RuntimeError as exc:
        last = [ln for ln in str(exc).splitlines() if ln.strip()][-1:] or ["?"]
        raise DemoUnavailable(
            f"exporting the demo model ({demo.CONFIG_PATH.name}, "
            f"{'trained checkpoint' if trained else 'random init'}) failed: {last[0]}"
        ) from exc
    return path, trained


def demo_images(ctx: Context, n: int, seed: int = 7, size: int = 128) -> list[Path]:
    """``n`` demo images (JPEG, ``size`` px) written by demo.shapes, cached."""
    from demo.shapes import write_collection

    out = ctx.cache / f"demo-images-{n}-seed{seed}-{size}"
    done = out / ".complete"
    if not done.is_file():
        if out.exists():
            shutil.rmtree(out)
        ctx.log(f"  rendering {n} demo images ...")
        write_collection(out, n, seed, size=size)
        done.write_text("ok\n")
    return sorted(p for p in out.rglob("*.jpg"))


def image_labels(paths: Sequence[Path]) -> list[dict[str, Any]]:
    return [json.loads(p.with_suffix(".json").read_text()) for p in paths]


@contextlib.contextmanager
def timed(label: str, ctx: Context) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    ctx.log(f"  {label}: {time.perf_counter() - t0:.1f}s")


def ratio_text(x: float) -> str:
    return f"{x:.2f}x" if x < 100 else f"{x:,.0f}x"
