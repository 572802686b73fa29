"""onnxruntime sessions for the bundle's text and vision towers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from handler.core.bundle import IO
from handler.core.cpus import usable_cpus

default_threads = usable_cpus  # the name the runtime and the builder know


def create_session(
    path: str | Path, precision: str = "fp32", threads: int | None = None, *, spinning: bool = True
) -> ort.InferenceSession:
    """A CPU session: ``threads`` intra-op threads (default: the usable cores), sequential execution.
    ``spinning=False``: idle intra-op threads sleep instead of spin-waiting between calls (the builder,
    whose decode workers need those cores)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    # onnxruntime's layout (level 3) optimiser crashes the process on fp16 graphs on CPU; extended is safe.
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        if precision == "fp16"
        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def trim_padding(ids: np.ndarray, pad_id: int = 0) -> np.ndarray:
    """Drop the trailing columns that are ``pad_id`` in every row (at least one column is kept).

    For a causal text tower pooled at the EOT token (a bundle with ``text.variable_length``) these are the
    positions after the EOT token of the longest text: they cannot change any row's embedding."""
    used = np.flatnonzero((ids != pad_id).any(axis=0))
    return ids[:, : int(used[-1]) + 1 if used.size else 1]


class Encoder:
    """One tower: batched inference returning float32, L2-normalised rows.

    ``trim_pad_id`` (variable-length text graphs only): each batch is trimmed with :func:`trim_padding`."""

    def __init__(
        self, session: ort.InferenceSession, tower: str, batch_size: int, trim_pad_id: int | None = None
    ):
        self.session: ort.InferenceSession | None = session
        self.input_name = IO[tower]["input"]["name"]
        self.output_name = IO[tower]["output"]["name"]
        self.batch_size = batch_size
        self.trim_pad_id = trim_pad_id

    def close(self) -> None:
        """Release the session (its memory and threads); later calls raise RuntimeError."""
        self.session = None

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise RuntimeError("encoder closed")
        if self.trim_pad_id is not None:
            x = trim_padding(x, self.trim_pad_id)
        out: np.ndarray = self.session.run([self.output_name], {self.input_name: x})[0]
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        outs = [self._run(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        out = np.concatenate(outs).astype(np.float32, copy=False)
        # The graph normalises already; renormalising absorbs fp16/int8 rounding (no-op at fp32 precision).
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: np.ndarray = out / np.maximum(norms, 1e-12)
        return unit
