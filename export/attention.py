"""Export-friendly attention and the variable-length text tower (docs/formats.md, ``text.variable_length``).

``torch.onnx.export`` decomposes ``nn.MultiheadAttention`` into a sequence-first graph full of
Transpose/Reshape/Shape ops, with the example's sequence length baked into some Reshapes. ``ExportMHA``
computes the same self-attention with the same parameters as one packed QKV MatMul, two batched MatMuls and
a Softmax; it is swapped in only while exporting (:func:`export_attention`).

CLIP's text tower is causal and pools at the EOT token, so the padding after the EOT token of the longest
text in a batch cannot change the result: the text graph then takes any sequence length up to
``context_length`` (positional embedding and causal mask sliced) and the runtime drops those columns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

__all__ = ["ExportMHA", "VariableLengthTextTower", "export_attention", "variable_length_problem"]


class ExportMHA(torch.nn.Module):
    """Self-attention with an ``nn.MultiheadAttention``'s own parameters, as plain batched ops.

    Anything but plain self-attention (cross-attention, key padding masks, weights requested) is delegated
    to the wrapped module unchanged."""

    def __init__(self, mha: torch.nn.MultiheadAttention):
        super().__init__()
        self.mha = mha

    def forward(self, q_x, k_x=None, v_x=None, need_weights=False, attn_mask=None, **kwargs):
        m = self.mha
        if (
            (k_x is not None and k_x is not q_x)
            or (v_x is not None and v_x is not q_x)
            or need_weights
            or any(v is not None for v in kwargs.values())
        ):
            return m(q_x, k_x, v_x, need_weights=need_weights, attn_mask=attn_mask, **kwargs)
        x = q_x if m.batch_first else q_x.transpose(0, 1)
        b, n, d = x.shape
        h = m.num_heads
        hd = d // h
        qkv = F.linear(x, m.in_proj_weight, m.in_proj_bias).reshape(b, n, 3, h, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.matmul(q * (hd**-0.5), k.transpose(-2, -1))
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                attn = attn.masked_fill(attn_mask, float("-inf"))
            else:
                attn = attn + attn_mask
        out = torch.matmul(attn.softmax(dim=-1), v).transpose(1, 2).reshape(b, n, d)
        out = F.linear(out, m.out_proj.weight, m.out_proj.bias)
        return (out if m.batch_first else out.transpose(0, 1)), None


def _plain(mha: torch.nn.MultiheadAttention) -> bool:
    """ExportMHA's maths covers it: packed QKV projection, no bias_k/bias_v, no zero attention, no dropout."""
    return (
        mha._qkv_same_embed_dim
        and mha.in_proj_weight is not None
        and mha.bias_k is None
        and not mha.add_zero_attn
        and (mha.dropout == 0.0 or not mha.training)
    )


@contextlib.contextmanager
def export_attention(model: torch.nn.Module) -> Iterator[int]:
    """Swap every block's plain ``attn`` (nn.MultiheadAttention) for ExportMHA; restored on exit.
    Yields how many were swapped."""
    swapped = []
    for mod in model.modules():
        attn = getattr(mod, "attn", None)
        if isinstance(attn, torch.nn.MultiheadAttention) and _plain(attn):
            swapped.append((mod, attn))
            mod.attn = ExportMHA(attn).train(attn.training)
    try:
        yield len(swapped)
    finally:
        for mod, attn in swapped:
            mod.attn = attn


def variable_length_problem(model: torch.nn.Module) -> str | None:
    """None when dropping the padding after the EOT token is exact for this text tower, else why not."""
    if not all(
        hasattr(model, a) for a in ("token_embedding", "positional_embedding", "transformer", "ln_final")
    ):
        return "the text tower is not open_clip's built-in CLIP text transformer (custom text tower)"
    if getattr(model, "attn_mask", None) is None:
        return "the text tower is not causal (no attention mask): padding changes every position"
    pool = getattr(model, "text_pool_type", None)
    if pool not in ("argmax", "eos"):
        return f"the text tower pools with {pool!r}, not at the EOT token (argmax / eos)"
    return None


class VariableLengthTextTower(torch.nn.Module):
    """token ids [batch, n <= context_length] -> L2-normalised text embeddings: ``CLIP.encode_text`` with the
    positional embedding and the causal mask sliced to n."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        from open_clip.transformer import text_global_pool

        m = self.model
        n = input_ids.shape[1]
        cast_dtype = m.transformer.get_cast_dtype()
        x = m.token_embedding(input_ids).to(cast_dtype) + m.positional_embedding[:n].to(cast_dtype)
        x = m.transformer(x, attn_mask=m.attn_mask[:n, :n])
        x = m.ln_final(x)
        x = text_global_pool(x, input_ids, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        if isinstance(m.text_projection, torch.nn.Linear):
            x = m.text_projection(x)
        elif m.text_projection is not None:
            x = x @ m.text_projection
        return F.normalize(x, dim=-1)
