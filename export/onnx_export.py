"""Trace OpenCLIP's text and vision towers to ONNX, and derive the fp16 / int8 variants."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch

from export.attention import VariableLengthTextTower, export_attention, variable_length_problem
from handler.bundle import IO

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17


class TextTower(torch.nn.Module):
    """token ids [batch, context_length] -> L2-normalised text embeddings [batch, embed_dim]."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids, normalize=True)


class VisualTower(torch.nn.Module):
    """pixels [batch, 3, H, W] -> L2-normalised image embeddings [batch, embed_dim]."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values, normalize=True)


def _export(module: torch.nn.Module, example: torch.Tensor, tower: str, out: Path, opset: int,
            input_axes: dict[int, str] | None = None) -> None:
    names = IO[tower]
    in_name, out_name = names["input"]["name"], names["output"]["name"]
    # The fused MHA fast path has no ONNX symbolic; the plain path exports to standard ops.
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(out),
            input_names=[in_name],
            output_names=[out_name],
            dynamic_axes={in_name: input_axes or {0: "batch"}, out_name: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,  # the dynamo exporter rejected an output name colliding with an internal one
        )
    onnx.checker.check_model(str(out), full_check=True)


def export_towers(model: torch.nn.Module, context_length: int, image_size: list[int], out_dir: Path,
                  *, opset: int = DEFAULT_OPSET, device: str = "cpu",
                  variable_length: bool = True) -> dict[str, Path]:
    """Writes textual.onnx and visual.onnx (fp32) into out_dir, with export-friendly attention (ExportMHA).

    With ``variable_length`` (and when :func:`variable_length_problem` finds none) the text graph takes any
    sequence length up to context_length (dynamic axis 1, "sequence"); otherwise always context_length."""
    model = model.float().eval()
    variable = variable_length and variable_length_problem(model) is None
    # A variable-length graph is traced with a short example, so no length can be baked in as a constant.
    text_example = torch.zeros((2, min(9, context_length) if variable else context_length), dtype=torch.int64,
                               device=device)
    text_example[:, 0] = 49406
    text_example[:, 1] = 49407
    image_example = torch.zeros((2, 3, *image_size), dtype=torch.float32, device=device)
    paths = {"textual": out_dir / "textual.onnx", "visual": out_dir / "visual.onnx"}
    # Wrappers must be in eval mode too: the exporter restores the wrapper's mode on the whole module tree
    # afterwards, and a wrapper left in train mode would switch BatchNorm (ResNet towers) to batch statistics.
    with export_attention(model):
        if variable:
            _export(VariableLengthTextTower(model).eval(), text_example, "textual", paths["textual"], opset,
                    {0: "batch", 1: "sequence"})
        else:
            _export(TextTower(model).eval(), text_example, "textual", paths["textual"], opset)
        _export(VisualTower(model).eval(), image_example, "visual", paths["visual"], opset)
    if model.training:  # pragma: no cover - defensive
        raise RuntimeError("the model left export in training mode")
    return paths


def to_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and compute, float32 inputs/outputs (casts inside the graph)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(dst))


def to_int8(src: Path, dst: Path) -> None:
    """Dynamic quantization: int8 weights of MatMul/Gemm, activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(
            str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
    finally:
        pre.unlink(missing_ok=True)
