"""Pick the text tokenizer a bundle's manifest names (`text.tokenizer.type`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from handler.core.errors import ArtifactError, InvalidTextError

CLIP_BPE = "clip_bpe"  # open_clip SimpleTokenizer (the default of bundles without a type)
HF_TOKENIZERS = "hf_tokenizers"  # open_clip HFTokenizer, via the Rust `tokenizers` library
TYPES = (CLIP_BPE, HF_TOKENIZERS)


def tokenizer_type(text_section: dict[str, Any]) -> str:
    try:
        ttype = text_section["tokenizer"].get("type", CLIP_BPE)
    except (KeyError, TypeError, AttributeError) as e:
        raise ArtifactError(f"invalid manifest text section: {e!r}") from e
    if ttype not in TYPES:
        raise ArtifactError(f"unsupported tokenizer type {ttype!r} (this runtime reads {', '.join(TYPES)})")
    return str(ttype)


def tokenizer_files(text_section: dict[str, Any]) -> list[str]:
    """Bundle files the tokenizer reads (verified and fetched with the text tower)."""
    tok = text_section["tokenizer"]
    return [tok["file"] if tokenizer_type(text_section) == HF_TOKENIZERS else tok["vocab_file"]]


def load_tokenizer(bundle_dir: str | os.PathLike[str], text_section: dict[str, Any]) -> Any:
    """ClipTokenizer or HfTokenizer; both return int64 [n, context_length] ids and have tokenize_with_info."""
    if tokenizer_type(text_section) == HF_TOKENIZERS:
        # imports `tokenizers` only for bundles that need it
        from handler.core.hf_tokenizer import HfTokenizer

        return HfTokenizer.from_manifest(bundle_dir, text_section)
    from handler.core.tokenizer import ClipTokenizer

    return ClipTokenizer.from_manifest(bundle_dir, text_section)


def tokenize_with_info(
    tokenizer: Any, texts: Sequence[str], language: str | None = None
) -> tuple[np.ndarray, list[bool]]:
    """`tokenizer.tokenize_with_info`, with a language code only where the tokenizer has languages."""
    if language is None:
        ids, cut = tokenizer.tokenize_with_info(texts)
    elif not getattr(tokenizer, "languages", None):
        raise InvalidTextError("this model's tokenizer has no language option; omit 'language'")
    else:
        ids, cut = tokenizer.tokenize_with_info(texts, language)
    return np.asarray(ids), list(cut)
