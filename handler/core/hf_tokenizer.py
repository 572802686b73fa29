"""Torch-free port of open_clip 3.3.0 ``HFTokenizer`` on the Rust ``tokenizers`` library.

The exporter saves the model's fast tokenizer as ``tokenizer.json`` and records in the manifest what
open_clip adds around it: the cleaning (``clean``: whitespace / lower / canonicalize, the same functions as
the CLIP BPE tokenizer), truncation and padding to ``context_length`` with the real pad id (and the
tokenizer's sides), ``strip_sep_token`` (sep ids become 0) and, for NLLB, the language-code templates of
``set_src_lang_special_tokens``. Ids equal open_clip's (tests compare them on thousands of strings).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from tokenizers.processors import TemplateProcessing

from handler.core.errors import ArtifactError, InvalidTextError
from handler.core.text_clean import clean_function

TYPE = "hf_tokenizers"
SIDES = ("left", "right")


class HfTokenizer:
    """``tokenizer.json`` + open_clip's HFTokenizer rules -> int64 ids [n, context_length]."""

    def __init__(
        self,
        tokenizer_file: str | os.PathLike[str],
        *,
        context_length: int,
        pad_token_id: int,
        pad_token: str,
        clean: str = "whitespace",
        strip_sep_token: bool = False,
        sep_token_id: int | None = None,
        padding_side: str = "right",
        truncation_side: str = "right",
        pad_type_id: int = 0,
        language: dict[str, Any] | None = None,
    ) -> None:
        clean_fn = clean_function(clean)
        if not isinstance(context_length, int) or context_length < 1:
            raise ArtifactError(f"invalid context_length {context_length!r} (need an int >= 1)")
        if padding_side not in SIDES or truncation_side not in SIDES:
            raise ArtifactError(f"padding/truncation side must be one of {SIDES}")
        if strip_sep_token and sep_token_id is None:
            raise ArtifactError("strip_sep_token needs sep_token_id")
        try:
            self._json = Path(tokenizer_file).read_text(encoding="utf-8")
            base = Tokenizer.from_str(self._json)
        except Exception as exc:  # OSError, UnicodeDecodeError; tokenizers raises plain Exception
            raise ArtifactError(f"cannot load tokenizer {tokenizer_file}: {exc}") from exc
        self.context_length = context_length
        self.clean = clean
        self._clean_fn = clean_fn
        self.pad_token_id = pad_token_id
        self.strip_sep_token = strip_sep_token
        self.sep_token_id = sep_token_id
        self._pad: dict[str, Any] = {
            "length": context_length,
            "pad_id": pad_token_id,
            "pad_token": pad_token,
            "pad_type_id": pad_type_id,
            "direction": padding_side,
        }
        self._trunc: dict[str, Any] = {
            "max_length": context_length,
            "stride": 0,
            "strategy": "longest_first",
            "direction": truncation_side,
        }
        self.language = language
        self.vocab_size = base.get_vocab_size(with_added_tokens=True)
        self._by_lang: dict[str | None, Tokenizer] = {None: self._configure(base)}
        self._lock = threading.Lock()
        if language is not None:
            self._by_lang[language.get("default")] = self._by_lang[None]

    @classmethod
    def from_manifest(cls, bundle_dir: str | os.PathLike[str], text_section: dict[str, Any]) -> HfTokenizer:
        try:
            tok = text_section["tokenizer"]
            name = tok["file"]
            if Path(name).name != name:
                raise ArtifactError(f"tokenizer file must be a plain file name, got {name!r}")
            return cls(
                Path(bundle_dir) / name,
                context_length=int(text_section["context_length"]),
                pad_token_id=int(tok["pad_token_id"]),
                pad_token=str(tok["pad_token"]),
                clean=tok.get("clean", "whitespace"),
                strip_sep_token=bool(tok.get("strip_sep_token", False)),
                sep_token_id=tok.get("sep_token_id"),
                padding_side=tok.get("padding_side", "right"),
                truncation_side=tok.get("truncation_side", "right"),
                pad_type_id=int(tok.get("pad_type_id", 0)),
                language=tok.get("language"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ArtifactError(f"invalid manifest text section: {e!r}") from e

    def _configure(self, tok: Tokenizer) -> Tokenizer:
        tok.enable_truncation(**self._trunc)
        tok.enable_padding(**self._pad)
        return tok

    @property
    def languages(self) -> list[str]:
        return sorted(self.language["codes"]) if self.language else []

    def _for_language(self, language: str | None) -> Tokenizer:
        """The tokenizer whose post-processor adds ``language``'s code (NLLB's
        ``set_src_lang_special_tokens``)."""
        tok = self._by_lang.get(language)
        if tok is not None:
            return tok
        if self.language is None:
            raise InvalidTextError("this model's tokenizer has no language option")
        codes = self.language["codes"]
        if language not in codes:
            raise InvalidTextError(f"unknown language {language!r}; use one of: {', '.join(self.languages)}")
        eos, eos_id = self.language["eos_token"], int(self.language["eos_token_id"])
        if self.language.get("legacy"):
            single, pair = ["$A", eos, language], ["$A", "$B", eos, language]
        else:
            single, pair = [language, "$A", eos], [language, "$A", "$B", eos]
        tok = Tokenizer.from_str(self._json)
        tok.post_processor = TemplateProcessing(
            single=single, pair=pair, special_tokens=[(eos, eos_id), (language, int(codes[language]))]
        )
        with self._lock:
            return self._by_lang.setdefault(language, self._configure(tok))

    def tokenize_with_info(
        self, texts: str | Sequence[str], language: str | None = None
    ) -> tuple[np.ndarray, list[bool]]:
        """Ids int64 [n, context_length] and, per input, whether it was truncated."""
        if isinstance(texts, str):
            texts = [texts]
        elif not isinstance(texts, Sequence) or isinstance(texts, bytes | bytearray):
            raise InvalidTextError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
        if not all(isinstance(t, str) for t in texts):
            raise InvalidTextError("every text must be a string")
        if not texts:
            return np.zeros((0, self.context_length), np.int64), []
        tok = self._for_language(language)
        try:
            encodings = tok.encode_batch([self._clean_fn(t) for t in texts])
        except Exception as e:  # tokenizers raises plain Exception
            raise InvalidTextError(f"cannot tokenize text: {e}") from e
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        if self.strip_sep_token:
            ids[ids == self.sep_token_id] = 0
        return ids, [bool(e.overflowing) for e in encodings]

    def __call__(self, texts: str | Sequence[str], language: str | None = None) -> np.ndarray:
        return self.tokenize_with_info(texts, language)[0]
