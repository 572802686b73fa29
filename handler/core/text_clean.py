"""Text cleaning of open_clip 3.3.0 tokenizers (``clean``: lower / whitespace / canonicalize).

Shared by the CLIP BPE tokenizer (:mod:`handler.core.tokenizer`) and the Hugging Face one
(:mod:`handler.core.hf_tokenizer`), as in open_clip: ftfy + double ``html.unescape``, then whitespace
collapsing, lowercasing or big_vision's canonicalization.
"""

from __future__ import annotations

import html
import string
from collections.abc import Callable

import ftfy

from handler.core.errors import ArtifactError

__all__ = ["CLEAN_MODES", "basic_clean", "canonicalize_text", "clean_function", "whitespace_clean"]

CLEAN_MODES = ("lower", "whitespace", "canonicalize")


def basic_clean(text: str) -> str:
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text: str) -> str:
    return " ".join(text.split()).strip()


_PUNCT_TABLE = str.maketrans("", "", string.punctuation)


def canonicalize_text(text: str) -> str:
    """Lowercase, ``_`` -> space, ASCII punctuation removed, whitespace collapsed (big_vision)."""
    text = text.replace("_", " ")
    text = text.translate(_PUNCT_TABLE)
    text = text.lower()
    text = " ".join(text.split())
    return text.strip()


def _clean_lower(x: str) -> str:
    return whitespace_clean(basic_clean(x)).lower()


def _clean_whitespace(x: str) -> str:
    return whitespace_clean(basic_clean(x))


def _clean_canonicalize(x: str) -> str:
    return canonicalize_text(basic_clean(x))


_CLEAN_FNS = {"lower": _clean_lower, "whitespace": _clean_whitespace, "canonicalize": _clean_canonicalize}


def clean_function(mode: str) -> Callable[[str], str]:
    """The cleaning function of a manifest ``clean`` mode; ArtifactError for an unknown mode."""
    fn = _CLEAN_FNS.get(mode) if isinstance(mode, str) else None
    if fn is None:
        raise ArtifactError(f"unknown tokenizer clean mode {mode!r} (expected one of {CLEAN_MODES})")
    return fn
