"""onnxruntime sessions for the bundle's text and vision towers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from handler.core.bundle import IO


def default_threads() -> int:
    """Cores this process may use (cgroup/affinity aware where the platform tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def create_session(path: str | Path, precision: str = "fp32", threads: int | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    # onnxruntime's layout (level 3) optimiser crashes the process on fp16 graphs on CPU; extended is safe.
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if precision == "fp16"
        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class Encoder:
    """One tower: batched inference returning float32, L2-normalised rows."""

    def __init__(self, session: ort.InferenceSession, tower: str, batch_size: int):
        self.session = session
        self.input_name = IO[tower]["input"]["name"]
        self.output_name = IO[tower]["output"]["name"]
        self.batch_size = batch_size

    def __call__(self, x: np.ndarray) -> np.ndarray:
        outs = [
            self.session.run([self.output_name], {self.input_name: x[i:i + self.batch_size]})[0]
            for i in range(0, len(x), self.batch_size)
        ]
        out = np.concatenate(outs).astype(np.float32, copy=False)
        # The graph normalises already; renormalising absorbs fp16/int8 rounding (no-op at fp32 precision).
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: np.ndarray = out / np.maximum(norms, 1e-12)
        return unit
