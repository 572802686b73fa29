"""Trace OpenCLIP's text and vision towers to ONNX, and derive the fp16 / int8 variants."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from handler.bundle import IO

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
#: protobuf cannot serialise a model of 2 GiB or more; above this many bytes of weights the tensors go to an
#: ONNX external-data file `<name>.onnx.data` next to the graph (margin for the graph itself).
EXTERNAL_DATA_BYTES = 2**31 - 2**27


def needs_external_data(weight_bytes: int, limit: int = EXTERNAL_DATA_BYTES) -> bool:
    return weight_bytes > limit


def external_data_name(onnx_name: str) -> str:
    return f"{onnx_name}.data"


def _initializer_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            total += int(next((e.value for e in t.external_data if e.key == "length"), 0))
        else:
            total += len(t.raw_data) or t.ByteSize()
    return total


def save_onnx(model: onnx.ModelProto, dst: Path, limit: int = EXTERNAL_DATA_BYTES) -> Path | None:
    """Save `model` at dst; weights over `limit` bytes go to one external-data file (returned, else None)."""
    dst = Path(dst)
    data = dst.with_name(external_data_name(dst.name))
    data.unlink(missing_ok=True)
    if not needs_external_data(_initializer_bytes(model), limit):
        onnx.save(model, str(dst))
        return None
    onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    return data


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


def _export(module: torch.nn.Module, example: torch.Tensor, tower: str, out: Path, opset: int) -> None:
    names = IO[tower]
    in_name, out_name = names["input"]["name"], names["output"]["name"]
    # The fused MHA fast path has no ONNX symbolic; the plain path exports to standard ops.
    torch.backends.mha.set_fastpath_enabled(False)
    # Export into a scratch directory: for > 2 GB graphs torch writes one file per tensor, which save_onnx
    # then gathers into a single `<name>.onnx.data`.
    scratch = Path(tempfile.mkdtemp(prefix=f".{tower}-", dir=out.parent))
    try:
        _torch_export(module, example, in_name, out_name, scratch / out.name, opset)
        save_onnx(onnx.load(str(scratch / out.name)), out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    onnx.checker.check_model(str(out), full_check=True)


def _torch_export(module, example, in_name: str, out_name: str, out: Path, opset: int) -> None:
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(out),
            input_names=[in_name],
            output_names=[out_name],
            dynamic_axes={in_name: {0: "batch"}, out_name: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,  # the dynamo exporter rejected an output name colliding with an internal one
        )


def export_towers(model: torch.nn.Module, text_example: torch.Tensor, image_size: list[int], out_dir: Path,
                  *, opset: int = DEFAULT_OPSET, device: str = "cpu") -> dict[str, Path]:
    """Writes textual.onnx and visual.onnx (fp32) into out_dir; text_example: ids from the model's tokenizer."""
    model = model.float().eval()
    text_example = text_example.to(device=device, dtype=torch.int64)
    image_example = torch.zeros((2, 3, *image_size), dtype=torch.float32, device=device)
    paths = {"textual": out_dir / "textual.onnx", "visual": out_dir / "visual.onnx"}
    # Wrappers must be in eval mode too: the exporter restores the wrapper's mode on the whole module tree
    # afterwards, and a wrapper left in train mode would switch BatchNorm (ResNet towers) to batch statistics.
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
    save_onnx(converted, dst)


def to_int8(src: Path, dst: Path) -> None:
    """Dynamic quantization: int8 weights of MatMul/Gemm, activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_suffix(".pre.onnx")
    big = src.with_name(external_data_name(src.name)).exists()
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True, save_as_external_data=big)
        quantize_dynamic(
            str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm"],
            use_external_data_format=big,
        )
        if big:  # gather whatever quantize_dynamic wrote into the bundle's single-file layout
            save_onnx(onnx.load(str(dst)), dst)
    finally:
        pre.unlink(missing_ok=True)
