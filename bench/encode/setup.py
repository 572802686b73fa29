"""The encode benchmark's set-up: the artifacts (the bundle as exported, a fixed-length-text export, int8
per-tensor and transformer-optimizer variants), the open_clip model and the inputs every engine gets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Context, export_bundle, random_checkpoint, register_quick_model
from bench.encode.measuring import QUERY, TEXT_LENGTHS, Plan


@dataclass
class Setup:
    plan: Plan
    threads: int
    bundle: Path  # the exporter as is: variable-length text
    fixed: Path  # the same model exported with --fixed-length-text
    pt_dir: Path  # int8 per-tensor variant of the fixed-length graphs
    tf_dir: Path  # onnxruntime transformer optimizer's variant of the fixed-length graphs
    fusion_stats: dict[str, Any]
    model: Any
    preprocess: Any
    tokenizer: Any
    context_length: int
    ids: np.ndarray  # QUERY tokenized, [1, context_length]
    ids_t: Any
    pixb: np.ndarray  # a batch of plan.batch preprocessed images
    pix1: np.ndarray
    pixb_t: Any
    pix1_t: Any
    trimmed: np.ndarray  # ids without the padding after EOT
    lengths: list[int]
    by_length: dict[int, np.ndarray]  # a query of exactly n tokens, per n in lengths


def prepare(ctx: Context, plan: Plan) -> Setup:
    import open_clip
    import torch

    from handler.core.encoders import trim_padding

    threads = ctx.threads
    # ---- artifacts: the bundle (exporter as is: variable-length text) and a fixed-length-text export
    bundle = export_bundle(ctx, precisions=("fp32", "fp16", "int8"))
    fixed = export_bundle(
        ctx,
        precisions=("fp32", "fp16", "int8"),
        tag=f"{ctx.model_name}-fixed-text",
        extra_args=("--fixed-length-text",),
    )
    ckpt = random_checkpoint(ctx)
    if ctx.quick:
        register_quick_model(ctx.cache)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(ctx.model_name, pretrained=str(ckpt))
    model.eval()
    tokenizer = open_clip.get_tokenizer(ctx.model_name)
    context_length = int(model.positional_embedding.shape[0])
    image_size = list(model.visual.image_size) if hasattr(model.visual, "image_size") else [224, 224]
    image_size = [int(s) for s in (image_size if isinstance(image_size, (list, tuple)) else [image_size] * 2)]

    pt_dir = ctx.cache / "int8-per-tensor" / fixed.name
    if not (pt_dir / "visual.int8.onnx").is_file():
        ctx.log("quantizing int8 per-tensor variants ...")
        pt_dir.mkdir(parents=True, exist_ok=True)
        _quantize(fixed / "textual.onnx", pt_dir / "textual.int8.onnx", per_channel=False)
        _quantize(fixed / "visual.onnx", pt_dir / "visual.int8.onnx", per_channel=False)
    tf_dir = ctx.cache / "ort-transformer-optimizer" / fixed.name
    if not (tf_dir / "fusions.json").is_file():
        ctx.log("running onnxruntime.transformers.optimizer (model_type=clip) ...")
        _transformer_optimize(fixed, tf_dir, model)
    fusion_stats: dict[str, Any] = json.loads((tf_dir / "fusions.json").read_text())

    model.eval()  # whatever ran before, the torch row measures open_clip in eval mode
    # ---- inputs
    ids = tokenizer([QUERY]).numpy().astype(np.int64)
    ids_t = torch.from_numpy(ids)
    rng = np.random.default_rng(0)
    pixb = rng.standard_normal((plan.batch, 3, *image_size), dtype=np.float32)
    pix1 = pixb[:1].copy()
    pixb_t, pix1_t = torch.from_numpy(pixb), torch.from_numpy(pix1)
    trimmed = trim_padding(ids)
    lengths = sorted({min(n, context_length) for n in TEXT_LENGTHS})
    by_length = {n: query_of_length(ids, n) for n in lengths}
    return Setup(
        plan=plan,
        threads=threads,
        bundle=bundle,
        fixed=fixed,
        pt_dir=pt_dir,
        tf_dir=tf_dir,
        fusion_stats=fusion_stats,
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        context_length=context_length,
        ids=ids,
        ids_t=ids_t,
        pixb=pixb,
        pix1=pix1,
        pixb_t=pixb_t,
        pix1_t=pix1_t,
        trimmed=trimmed,
        lengths=lengths,
        by_length=by_length,
    )


def query_of_length(ids: np.ndarray, n: int) -> np.ndarray:
    """[1, context] ids of a query with exactly n tokens (SOT, n - 2 words of ``ids``' text repeated, EOT)."""
    row = ids[0]
    eot = int(np.flatnonzero(row)[-1])
    words = row[1:eot]
    out = np.zeros_like(ids)
    out[0, 0], out[0, n - 1] = row[0], row[eot]
    out[0, 1 : n - 1] = np.resize(words, n - 2)
    return out


def _quantize(src: Path, dst: Path, *, per_channel: bool) -> None:
    """The exporter's int8 recipe (export.onnx_export.to_int8) with per_channel as a parameter."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(
            str(pre),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
    finally:
        pre.unlink(missing_ok=True)


def _transformer_optimize(bundle: Path, out: Path, model: Any) -> dict[str, Any]:
    import contextlib
    import io

    from onnxruntime.transformers.optimizer import optimize_model

    out.mkdir(parents=True, exist_ok=True)
    text_heads = int(model.transformer.resblocks[0].attn.num_heads)
    text_width = int(model.transformer.width)
    vis_heads = int(model.visual.transformer.resblocks[0].attn.num_heads)
    vis_width = int(model.visual.transformer.width)
    stats = {}
    for tower, heads, width in (("textual", text_heads, text_width), ("visual", vis_heads, vis_width)):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            m = optimize_model(
                str(bundle / f"{tower}.onnx"),
                model_type="clip",
                num_heads=heads,
                hidden_size=width,
                opt_level=0,
                use_gpu=False,
            )
        stats[tower] = {k: int(v) for k, v in m.get_fused_operator_statistics().items()}
        m.save_model_to_file(str(out / f"{tower}.onnx"))
    (out / "fusions.json").write_text(json.dumps(stats))
    return stats
