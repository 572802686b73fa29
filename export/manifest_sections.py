"""The manifest's ``text`` and ``image`` sections of a loaded model (docs/formats.md): what the torch-free
runtime needs to tokenize and preprocess exactly as open_clip does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import open_clip

from export import hf_text
from export.model_loading import ExportError, LoadedModel


def tokenizer_section(loaded: LoadedModel, out_dir: Path | None = None) -> dict[str, Any]:
    """Manifest `text` section; writes the tokenizer's files into out_dir when given."""
    tok = loaded.tokenizer
    if hf_text.is_hf_tokenizer(tok):
        try:
            return hf_text.hf_tokenizer_section(tok, out_dir)
        except hf_text.HfExportError as exc:
            raise ExportError(f"model {loaded.name!r}: {exc}") from exc
    clean_fn = getattr(tok, "clean_fn", None)
    clean = "lower"
    if clean_fn is not None:
        fname = getattr(clean_fn, "__name__", "") or getattr(getattr(clean_fn, "func", None), "__name__", "")
        for mode in ("whitespace", "canonicalize", "lower"):
            if mode in fname:
                clean = mode
                break
    reduction = getattr(tok, "reduction_fn", None)
    if reduction is not None:
        raise ExportError(
            f"model {loaded.name!r} uses a tokenizer reduction mask, which the runtime does not support"
        )
    return {
        "context_length": int(tok.context_length),
        "vocab_size": len(tok.encoder),
        "tokenizer": {
            "type": "clip_bpe",
            "vocab_file": "bpe_simple_vocab_16e6.txt.gz",
            "clean": clean,
            "reduction_mask": None,
            "sot_token_id": int(tok.sot_token_id),
            "eot_token_id": int(tok.eot_token_id),
            "pad_token_id": 0,
        },
    }


def image_section(loaded: LoadedModel) -> dict[str, Any]:
    cfg = loaded.preprocess_cfg
    size = cfg.get("size", 224)
    size = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
    return {
        "size": size,
        "mean": [float(x) for x in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)],
        "std": [float(x) for x in cfg.get("std", open_clip.OPENAI_DATASET_STD)],
        "interpolation": str(cfg.get("interpolation", "bicubic")),
        "resize_mode": str(cfg.get("resize_mode", "shortest")),
        "fill_color": int(cfg.get("fill_color", 0)),
    }
