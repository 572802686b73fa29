"""Measuring helpers of the encode benchmark: the timing plan, this machine's sgemm rate, FLOP counts,
onnxruntime sessions as the tuning rows make them, and onnxruntime's per-operator profile."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Context, Timing, time_fn

QUERY = "a photo of a cat"
TEXT_LENGTHS = (7, 20, 77)  # tokens incl. SOT and EOT: a short query, a sentence, the whole context
IMAGE_GFLOP_VITB32 = 8.82  # ViT-B-32 image tower, per image (given; the FLOP counter's number is shown too)


class Plan:
    """How many timed runs per cell, spread over interleaved rounds (every engine runs once per round, so
    load from other processes hits all engines alike)."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.rounds = 1 if quick else 3
        self.text_runs, self.img1_runs, self.img16_runs = (3, 3, 2) if quick else (24, 15, 6)
        self.warmup = 1 if quick else 2
        self.cap = 5.0 if quick else 20.0  # max timed seconds per cell (over all rounds)
        self.batch = 4 if quick else 16


class Sgemm:
    """An n x n x n fp32 MatMul through onnxruntime (same thread count) and numpy; sampled once per round,
    interleaved with the engines, so the rate is measured under the same conditions as they are."""

    def __init__(self, threads: int, n: int):
        import onnxruntime as ort
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("MatMul", ["A", "B"], ["C"])],
            "sgemm",
            [
                helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n]),
                helper.make_tensor_value_info("B", TensorProto.FLOAT, [n, n]),
            ],
            [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((n, n), dtype=np.float32)
        self.b = rng.standard_normal((n, n), dtype=np.float32)
        self.n = n
        self.ort: list[float] = []
        self.np: list[float] = []

    def sample(self, runs: int) -> None:
        self.ort += time_fn(
            lambda: self.sess.run(None, {"A": self.a, "B": self.b}), runs=runs, warmup=2
        ).samples
        self.np += time_fn(lambda: self.a @ self.b, runs=max(1, runs // 2), warmup=1).samples

    def result(self) -> dict[str, float]:
        flops = 2.0 * self.n**3
        return {
            "n": self.n,
            "ort_gflops": flops / Timing(self.ort).median / 1e9,
            "ort_gflops_best": flops / min(self.ort) / 1e9,
            "numpy_gflops": flops / Timing(self.np).median / 1e9,
            "samples": len(self.ort),
        }


def count_gflops(model: Any, ids: Any, pixels: Any) -> dict[str, float]:
    """FLOPs per text / per image counted by torch.utils.flop_counter (matmul-class ops), with the fused MHA
    fast path off (its native kernel is invisible to the counter) - a cross-check of analytic_gflops."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.inference_mode():
            with FlopCounterMode(display=False) as fc:
                model.encode_text(ids[:1], normalize=True)
            out["text"] = fc.get_total_flops() / 1e9
            with FlopCounterMode(display=False) as fc:
                model.encode_image(pixels[:1], normalize=True)
            out["image"] = fc.get_total_flops() / 1e9
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return out


def analytic_gflops(model: Any) -> dict[str, float]:
    """FLOPs (2 x multiply-adds) of one text / one image from the architecture (open_clip ViT + text
    transformer): per layer and token the QKV, output and MLP projections, plus the attention products
    (QK^T and AV over all tokens), the patch embedding and the final projection of the pooled token."""

    def tower(blocks: Any, tokens: int) -> float:
        total = 0.0
        for b in blocks:
            w = b.attn.embed_dim
            hidden = b.mlp.c_fc.out_features
            total += tokens * 2 * (4 * w * w + 2 * w * hidden) + 2 * 2 * tokens * tokens * w
        return total

    text_tokens = int(model.positional_embedding.shape[0])
    text = tower(model.transformer.resblocks, text_tokens)
    proj = model.text_projection
    text += 2 * (
        proj.shape[0] * proj.shape[1] if hasattr(proj, "shape") else proj.in_features * proj.out_features
    )
    v = model.visual
    grid = int(v.grid_size[0]) * int(v.grid_size[1])
    k = v.conv1.kernel_size
    width = v.conv1.out_channels
    image = 2 * grid * v.conv1.in_channels * k[0] * k[1] * width
    image += tower(v.transformer.resblocks, grid + 1)
    if v.proj is not None:
        image += 2 * v.proj.shape[0] * v.proj.shape[1]
    return {"text": text / 1e9, "image": image / 1e9}


def session(
    path: Path, threads: int, level: str = "all", optimized_out: Path | None = None, spinning: bool = True
):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    if optimized_out is not None:
        opts.optimized_model_filepath = str(optimized_out)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_fn(sess: Any) -> Callable[[np.ndarray], np.ndarray]:
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def _op_kind(op: str) -> str:
    if op in ("MatMul", "Gemm", "FusedMatMul", "FusedGemm", "Conv", "FusedConv"):
        return "MatMul / Gemm (fp32)"
    if op in (
        "MatMulInteger",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "ConvInteger",
    ):
        return "int8 MatMul + dynamic quantization"
    if op == "Softmax":
        return "Softmax"
    if "Gelu" in op or op == "Erf":
        return "GELU / BiasGelu"
    if "LayerNorm" in op or op in ("LayerNormalization", "SkipLayerNormalization"):
        return "LayerNorm"
    if op in (
        "Transpose",
        "Reshape",
        "Concat",
        "Slice",
        "Gather",
        "Squeeze",
        "Unsqueeze",
        "Expand",
        "Split",
        "Cast",
        "Identity",
        "ReorderInput",
        "ReorderOutput",
        "Shape",
    ):
        return "Transpose / Reshape / copies"
    if op in (
        "Add",
        "Mul",
        "Div",
        "Sub",
        "Sqrt",
        "Pow",
        "Where",
        "Equal",
        "Mod",
        "ReduceL2",
        "Clip",
        "ArgMax",
    ):
        return "Add / Mul / elementwise"
    return "other"


def op_profile(path: Path, threads: int, x: np.ndarray, runs: int, ctx: Context) -> dict[str, float]:
    """Share of kernel time per operator kind, from onnxruntime's profiler (a separate session)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.enable_profiling = True
    opts.profile_file_prefix = str(ctx.scratch("encode-profile") / "ort")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x})
    for _ in range(runs):
        sess.run(None, {name: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    totals: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            kind = _op_kind(e.get("args", {}).get("op_name", ""))
            totals[kind] = totals.get(kind, 0.0) + float(e.get("dur", 0))
    total = sum(totals.values()) or 1.0
    return {k: v / total for k, v in totals.items()}
