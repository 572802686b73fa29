"""Trace OpenCLIP's text and vision towers to ONNX, and derive the fp16 / int8 variants."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch

from export.attention import VariableLengthTextTower, export_attention, variable_length_problem
from handler.core.bundle import IO

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
MIN_GATHER_TABLE = 1 << 16  # elements: smaller Gather tables (none in CLIP towers) stay float
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
    onnx.save_model(
        model,
        str(dst),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=1024,
    )
    return data


class TextTower(torch.nn.Module):
    """token ids [batch, context_length] -> L2-normalised text embeddings [batch, embed_dim]."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model: Any = model  # an open_clip model: encode_text / encode_image

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids, normalize=True)


class VisualTower(torch.nn.Module):
    """pixels [batch, 3, H, W] -> L2-normalised image embeddings [batch, embed_dim]."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model: Any = model  # an open_clip model: encode_text / encode_image

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values, normalize=True)


def _export(
    module: torch.nn.Module,
    example: torch.Tensor,
    tower: str,
    out: Path,
    opset: int,
    input_axes: dict[int, str] | None = None,
) -> None:
    names = IO[tower]
    in_name, out_name = names["input"]["name"], names["output"]["name"]
    # The fused MHA fast path has no ONNX symbolic; the plain path exports to standard ops.
    torch.backends.mha.set_fastpath_enabled(False)
    # Export into a scratch directory: for > 2 GB graphs torch writes one file per tensor, which save_onnx
    # then gathers into a single `<name>.onnx.data`.
    scratch = Path(tempfile.mkdtemp(prefix=f".{tower}-", dir=out.parent))
    try:
        _torch_export(module, example, in_name, out_name, scratch / out.name, opset, input_axes)
        save_onnx(onnx.load(str(scratch / out.name)), out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    onnx.checker.check_model(str(out), full_check=True)


def _torch_export(
    module,
    example,
    in_name: str,
    out_name: str,
    out: Path,
    opset: int,
    input_axes: dict[int, str] | None = None,
) -> None:
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


def export_towers(
    model: torch.nn.Module,
    text_example: torch.Tensor,
    image_size: list[int],
    out_dir: Path,
    *,
    opset: int = DEFAULT_OPSET,
    device: str = "cpu",
    variable_length: bool = True,
) -> dict[str, Path]:
    """Writes textual.onnx and visual.onnx (fp32) into out_dir, with export-friendly attention (ExportMHA);
    text_example: [n, context_length] ids from the model's own tokenizer.

    With ``variable_length`` (and when :func:`variable_length_problem` finds none) the text graph takes any
    sequence length up to context_length (dynamic axis 1, "sequence"); otherwise always context_length."""
    model = model.float().eval()
    variable = variable_length and variable_length_problem(model) is None
    text_example = text_example.to(device=device, dtype=torch.int64)
    if variable:  # traced with a short example, so no length can be baked in as a constant
        text_example = text_example[:, : min(9, text_example.shape[1])]
    image_example = torch.zeros((2, 3, *image_size), dtype=torch.float32, device=device)
    paths = {"textual": out_dir / "textual.onnx", "visual": out_dir / "visual.onnx"}
    # Wrappers must be in eval mode too: the exporter restores the wrapper's mode on the whole module tree
    # afterwards, and a wrapper left in train mode would switch BatchNorm (ResNet towers) to batch statistics.
    with export_attention(model):
        if variable:
            _export(
                VariableLengthTextTower(model).eval(),
                text_example,
                "textual",
                paths["textual"],
                opset,
                {0: "batch", 1: "sequence"},
            )
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
    save_onnx(converted, dst)


def to_int8(src: Path, dst: Path) -> None:
    """Dynamic quantization (int8 weights of MatMul/Gemm, activations quantized at run time), then embedding
    tables looked up by Gather stored int8 with one scale per row (see :func:`quantize_gather_tables`)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_suffix(".pre.onnx")
    big = src.with_name(external_data_name(src.name)).exists()
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True, save_as_external_data=big)
        quantize_dynamic(
            str(pre),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # 7-bit weights: without VNNI (AVX2, e.g. AMD EPYC here) u8s8 products saturate int16; the bundle
            # must be exact enough on any Lambda CPU (demo text cosine min 0.9971 -> 0.9996 on AVX2)
            reduce_range=True,
            op_types_to_quantize=["MatMul", "Gemm"],
            use_external_data_format=big,
        )
        if big:  # gather whatever quantize_dynamic wrote into the bundle's single-file layout
            save_onnx(onnx.load(str(dst)), dst)
    finally:
        pre.unlink(missing_ok=True)
    model = onnx.load(str(dst))
    if quantize_gather_tables(model):
        save_onnx(model, dst)


def quantize_gather_tables(model: onnx.ModelProto) -> int:
    """Weight-only int8 for float tables read by Gather (the text tower's token embedding: left fp32 it was
    101 of the 140 MB of ViT-B-32's int8 text tower). One symmetric scale per row, so trained tables whose
    rows differ widely in norm keep their accuracy (onnxruntime's Gather quantization uses one scale per
    tensor): Gather(int8 table) -> Cast -> Mul(Gather(row scales)). Returns the number of tables converted."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    graph_inputs = {i.name for i in graph.input}
    done = 0
    for node in list(graph.node):
        if node.op_type != "Gather" or not node.input:
            continue
        table = node.input[0]
        init = inits.get(table)
        if (
            init is None
            or init.data_type != TensorProto.FLOAT
            or len(init.dims) != 2
            or uses[table] != 1
            or table in graph_inputs
            or init.dims[0] * init.dims[1] < MIN_GATHER_TABLE
            or any(a.name == "axis" and a.i != 0 for a in node.attribute)
        ):
            continue
        w = numpy_helper.to_array(init)
        scale = (np.abs(w).max(axis=1, keepdims=True) / 127.0).astype(np.float32)
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        base, out = f"{table}_int8", node.output[0]
        graph.initializer.remove(init)
        graph.initializer.extend(
            [numpy_helper.from_array(q, base), numpy_helper.from_array(scale, f"{base}_scale")]
        )
        at = list(graph.node).index(node)
        graph.node.remove(node)
        new = [
            helper.make_node("Gather", [base, node.input[1]], [f"{base}_rows"], axis=0),
            helper.make_node("Gather", [f"{base}_scale", node.input[1]], [f"{base}_row_scales"], axis=0),
            helper.make_node("Cast", [f"{base}_rows"], [f"{base}_rows_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{base}_rows_f", f"{base}_row_scales"], [out]),
        ]
        for k, n in enumerate(new):
            graph.node.insert(at + k, n)
        done += 1
    return done
