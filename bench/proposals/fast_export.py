"""Proposal, measured by bench/encode.py: an export that onnxruntime runs faster, with the same numbers.

Two independent changes to ``export/onnx_export.py`` (patch: ``bench/proposals/fast-export.patch``, which
also carries the manifest flag, the runtime's trimming, the parity check on trimmed ids, docs and tests):

1. **Export-friendly attention.** ``torch.onnx.export`` decomposes ``nn.MultiheadAttention`` (open_clip's
   towers use it with ``batch_first=True``) into a sequence-first graph full of Transpose/Reshape/Shape
   ops, with the sequence length of the example baked into some Reshapes. ``ExportMHA`` computes the
   same self-attention with the same parameters as plain batched matmuls (one packed QKV projection,
   batch-first), swapped in only while exporting.
2. **Variable-length text.** The text tower is causal and pools at the EOT token, so the padding after the
   EOT token of the longest text in a batch cannot change the result. With ``ExportMHA`` the text graph
   accepts any sequence length <= context_length (dynamic axis 1; positional embedding and causal mask
   sliced to it), and the runtime trims padding columns before running it: a short query costs a
   fraction of the 77-token graph. Trimming is only valid for causal towers with argmax/eos pooling;
   the exporter records it in the manifest (``text.variable_length: true``) and the runtime trims only
   when the flag is there, so older bundles keep working.

Parity (fp32 ONNX vs PyTorch, max-abs) is measured by the benchmark on the exporter's own parity inputs.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


class ExportMHA(torch.nn.Module):
    """Self-attention computed with an ``nn.MultiheadAttention``'s own parameters, as plain batched ops."""

    def __init__(self, mha: torch.nn.MultiheadAttention):
        super().__init__()
        self.mha = mha

    def forward(self, q_x, k_x=None, v_x=None, need_weights=False, attn_mask=None):
        m = self.mha
        x = q_x if m.batch_first else q_x.transpose(0, 1)
        b, n, d = x.shape
        h = m.num_heads
        hd = d // h
        qkv = F.linear(x, m.in_proj_weight, m.in_proj_bias).reshape(b, n, 3, h, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.matmul(q * (hd ** -0.5), k.transpose(-2, -1))
        if attn_mask is not None:
            attn = attn + attn_mask
        out = torch.matmul(attn.softmax(dim=-1), v).transpose(1, 2).reshape(b, n, d)
        out = F.linear(out, m.out_proj.weight, m.out_proj.bias)
        return (out if m.batch_first else out.transpose(0, 1)), None


def supported(model: torch.nn.Module) -> bool:
    """Every attention is plain self-attention (no k/v layer norms, no attention-pool) with ExportMHA's maths."""
    for mod in model.modules():
        if isinstance(mod, torch.nn.MultiheadAttention) and (
                not mod._qkv_same_embed_dim or mod.in_proj_weight is None or mod.bias_k is not None):
            return False
        if hasattr(mod, "ln_1_kv"):
            return False
    return True


@contextlib.contextmanager
def export_attention(model: torch.nn.Module) -> Iterator[int]:
    """Swap every residual block's ``attn`` (nn.MultiheadAttention) for ExportMHA; restored on exit."""
    swapped = []
    for mod in model.modules():
        attn = getattr(mod, "attn", None)
        if isinstance(attn, torch.nn.MultiheadAttention):
            swapped.append((mod, attn))
            mod.attn = ExportMHA(attn).train(attn.training)
    try:
        yield len(swapped)
    finally:
        for mod, attn in swapped:
            mod.attn = attn
        model.eval()  # torch.onnx.export restores the wrapper's mode on the whole tree: keep eval


class VariableLengthText(torch.nn.Module):
    """token ids [batch, seq <= context_length] -> L2-normalised text embeddings (CLIP.encode_text, sliced)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        from open_clip.transformer import text_global_pool

        m = self.model
        n = input_ids.shape[1]
        x = m.token_embedding(input_ids) + m.positional_embedding[:n]
        x = m.transformer(x, attn_mask=m.attn_mask[:n, :n])
        x = m.ln_final(x)
        x = text_global_pool(x, input_ids, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        if isinstance(m.text_projection, torch.nn.Linear):
            x = m.text_projection(x)
        elif m.text_projection is not None:
            x = x @ m.text_projection
        return F.normalize(x, dim=-1)


def variable_length_ok(model: torch.nn.Module) -> bool:
    """Trimming padding is exact only for a causal text tower pooled at EOT (argmax/eos)."""
    return (getattr(model, "attn_mask", None) is not None and hasattr(model, "token_embedding")
            and getattr(model, "text_pool_type", None) in ("argmax", "eos"))


def _export(module: torch.nn.Module, example: torch.Tensor, out: Path, in_name: str, out_name: str,
            axes: dict[int, str], opset: int) -> None:
    import onnx

    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(out), input_names=[in_name], output_names=[out_name],
                          dynamic_axes={in_name: axes, out_name: {0: "batch"}}, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    onnx.checker.check_model(str(out), full_check=True)


def export_towers(model: torch.nn.Module, context_length: int, image_size: list[int] | tuple[int, int],
                  out_dir: Path, *, opset: int = 17) -> dict[str, Path]:
    """textual.onnx (variable length when valid) and visual.onnx with export-friendly attention."""
    from export.onnx_export import TextTower, VisualTower

    model = model.float().eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"textual": out_dir / "textual.onnx", "visual": out_dir / "visual.onnx"}
    with export_attention(model):
        if variable_length_ok(model):
            # An example shorter than context_length, so no length gets baked in as a constant.
            ids = torch.zeros((2, min(9, context_length)), dtype=torch.int64)
            text_module, axes = VariableLengthText(model).eval(), {0: "batch", 1: "sequence"}
        else:
            ids = torch.zeros((2, context_length), dtype=torch.int64)
            text_module, axes = TextTower(model).eval(), {0: "batch"}
        ids[:, 0], ids[:, 1] = 49406, 49407
        _export(text_module, ids, paths["textual"], "input_ids", "text_embeds", axes, opset)
        pixels = torch.zeros((2, 3, *image_size), dtype=torch.float32)
        _export(VisualTower(model).eval(), pixels, paths["visual"], "pixel_values", "image_embeds", {0: "batch"}, opset)
    return paths


def trim_padding(ids: np.ndarray, pad_id: int = 0) -> np.ndarray:
    """Drop the trailing columns that are padding in every row (what the proposed runtime does)."""
    ids = np.asarray(ids)
    used = np.flatnonzero((ids != pad_id).any(axis=0))
    n = int(used[-1]) + 1 if used.size else 1
    return ids[:, :n]
