"""How many CPUs this process may use (no onnxruntime import: the service's config reads it at cold start)."""

from __future__ import annotations

import os

__all__ = ["usable_cpus"]


def usable_cpus() -> int:
    """Cores this process may use: the affinity mask where the platform has one (cgroup/taskset aware),
    else ``os.cpu_count()``; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
