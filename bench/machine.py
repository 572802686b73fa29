"""The machine a benchmark runs on: its description (CPU, ISA, memory, versions), its load, and waiting for
the other processes to leave the CPUs idle."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any


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
