"""Torch-free CLIP BPE tokenizer: a faithful port of open_clip 3.3.0 ``SimpleTokenizer``.

Produces exactly the ids of ``open_clip.tokenizer.SimpleTokenizer`` (same cleaning
(:mod:`handler.core.text_clean`); same regex; same BPE (:mod:`handler.core.bpe`); ``<start_of_text>`` /
``<end_of_text>``; zero padding; truncation that keeps ``<end_of_text>`` at the last position).
``reduction_mask`` (random/syntax token dropping, training only) is not supported.

Behaviour inherited from open_clip that callers should know:

* the literal strings ``<start_of_text>`` / ``<end_of_text>`` in the input (any case in ``lower`` mode,
  lowercase only otherwise) are matched as special tokens and yield the sot/eot ids;
* lone surrogates are turned into U+FFFD by ftfy (no error);
* only the first ``context_length - 2`` BPE tokens are kept.

Cost: words are encoded only until the context is full, and BPE within a word is O(n log n). A word's first
tokens can depend on its last characters (``pbwlmayb`` -> ``pb wl may b``, ``pbwlmaya`` -> ``p bw lma ya``),
so a long word is merged whole rather than cut. The cache has a byte budget and skips words over
``MAX_CACHED_WORD``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import regex as re

from handler.core.bpe import bytes_to_unicode, merge, read_merges
from handler.core.errors import ArtifactError, InvalidTextError
from handler.core.text_clean import clean_function

__all__ = ["MAX_CACHED_WORD", "SPECIAL_TOKENS", "ClipTokenizer"]

SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
DEFAULT_CACHE_SIZE = 100_000
#: Byte budget of the BPE cache (estimated: 2 bytes a char plus CACHE_ENTRY_OVERHEAD per entry).
DEFAULT_CACHE_BYTES = 32 * 2**20
CACHE_ENTRY_OVERHEAD = 200
#: Longer pre-tokens (byte-encoded chars) are not cached: rare, big, and cheap enough to merge again.
MAX_CACHED_WORD = 64


class ClipTokenizer:
    """CLIP BPE tokenizer returning int64 numpy ids, identical to open_clip's ``SimpleTokenizer``."""

    def __init__(
        self,
        vocab_path: str | os.PathLike[str],
        context_length: int = 77,
        clean: str = "lower",
        sot_token_id: int | None = None,
        eot_token_id: int | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self._clean_fn = clean_function(clean)
        if not isinstance(context_length, int) or context_length < 2:
            raise ArtifactError(f"invalid context_length {context_length!r} (need an int >= 2)")
        self.vocab_path = Path(vocab_path)
        self.context_length = context_length
        self.clean = clean
        self.byte_encoder = bytes_to_unicode()

        merges = read_merges(vocab_path)
        # Ranks keyed by the raw line "a b": no tuple building at load; bpe() looks up first + " " + second.
        self._ranks: dict[str, int] = dict(zip(merges, range(len(merges)), strict=True))
        self._merges = merges
        byte_chars = list(self.byte_encoder.values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars]
        vocab += "\n".join(merges).replace(" ", "").split("\n")
        vocab += SPECIAL_TOKENS
        self.encoder: dict[str, int] = dict(zip(vocab, range(len(vocab)), strict=True))
        self._decoder: dict[int, str] | None = None
        self.vocab_size = len(self.encoder)

        self.sot_token_id = self.encoder[SPECIAL_TOKENS[0]]
        self.eot_token_id = self.encoder[SPECIAL_TOKENS[1]]
        for name, want, have in (
            ("sot", sot_token_id, self.sot_token_id),
            ("eot", eot_token_id, self.eot_token_id),
        ):
            if want is not None and want != have:
                raise ArtifactError(f"{name}_token_id {want} does not match the vocabulary ({have})")

        self._cache_size = cache_size
        self._cache_max_bytes = cache_bytes
        self._special = {t: t for t in SPECIAL_TOKENS}
        self._cache: dict[str, str] = dict(self._special)
        self._cache_bytes = 0
        special = "|".join(SPECIAL_TOKENS)
        self._pat = re.compile(
            special + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            re.IGNORECASE,
        )

    @classmethod
    def from_manifest(cls, bundle_dir: str | os.PathLike[str], text_section: dict[str, Any]) -> ClipTokenizer:
        """Build from a bundle directory and its manifest ``text`` section (docs/formats.md)."""
        try:
            tok = text_section["tokenizer"]
            ttype = tok.get("type", "clip_bpe")
            if ttype != "clip_bpe":
                raise ArtifactError(f"unsupported tokenizer type {ttype!r} (only 'clip_bpe')")
            if tok.get("reduction_mask"):
                raise ArtifactError(
                    f"tokenizer reduction_mask {tok['reduction_mask']!r} is not supported "
                    "(training-time token dropping); only plain truncation"
                )
            if tok.get("pad_token_id", 0) != 0:
                raise ArtifactError(f"pad_token_id {tok['pad_token_id']} unsupported (open_clip pads with 0)")
            vocab_file = tok["vocab_file"]
            if Path(vocab_file).name != vocab_file:
                raise ArtifactError(f"vocab_file must be a plain file name, got {vocab_file!r}")
            context_length = text_section["context_length"]
            self = cls(
                Path(bundle_dir) / vocab_file,
                context_length=context_length,
                clean=tok.get("clean", "lower"),
                sot_token_id=tok.get("sot_token_id"),
                eot_token_id=tok.get("eot_token_id"),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ArtifactError(f"invalid manifest text section: {e!r}") from e
        vocab_size = text_section.get("vocab_size")
        if vocab_size is not None and vocab_size != self.vocab_size:
            raise ArtifactError(f"manifest vocab_size {vocab_size} != vocabulary size {self.vocab_size}")
        return self

    def bpe(self, token: str) -> str:
        """BPE-merge one byte-encoded pre-token; returns space-separated symbols (same as open_clip)."""
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        symbols = [*token[:-1], token[-1] + "</w>"]
        out = " ".join(symbols if len(symbols) == 1 else merge(symbols, self._ranks, self._merges))
        if len(token) <= MAX_CACHED_WORD:
            size = 2 * (len(token) + len(out)) + CACHE_ENTRY_OVERHEAD
            if len(self._cache) >= self._cache_size or self._cache_bytes + size > self._cache_max_bytes:
                self._cache = dict(self._special)
                self._cache_bytes = 0
            self._cache[token] = out
            self._cache_bytes += size
        return out

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """BPE ids of ``text`` after cleaning, without sot/eot.

        With ``max_tokens``, words are encoded only until at least that many ids exist (the result may hold
        a few more, from the last word; its first ``max_tokens`` ids are those of the full encoding).
        """
        if not isinstance(text, str):
            raise InvalidTextError(f"text must be a string, got {type(text).__name__}")
        try:
            cleaned = self._clean_fn(text)
            ids: list[int] = []
            enc = self.encoder
            be = self.byte_encoder
            for m in self._pat.finditer(cleaned):
                token = "".join([be[b] for b in m.group().encode("utf-8")])
                ids.extend([enc[t] for t in self.bpe(token).split(" ")])
                if max_tokens is not None and len(ids) >= max_tokens:
                    break
        except (UnicodeError, ValueError) as e:
            raise InvalidTextError(f"cannot tokenize text: {e}") from e
        return ids

    def tokenize_with_info(self, texts: str | Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """Ids int64 [n, context_length] and, per input, whether it was truncated."""
        if isinstance(texts, str):
            texts = [texts]
        elif not isinstance(texts, Sequence) or isinstance(texts, bytes | bytearray):
            raise InvalidTextError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
        cl = self.context_length
        result = np.zeros((len(texts), cl), dtype=np.int64)
        flags: list[bool] = []
        for i, text in enumerate(texts):
            # cl - 1 ids: the cl - 2 kept ones plus one to tell whether anything was cut
            tokens = [self.sot_token_id, *self.encode(text, max_tokens=cl - 1), self.eot_token_id]
            truncated = len(tokens) > cl
            if truncated:
                tokens = tokens[:cl]
                tokens[-1] = self.eot_token_id
            result[i, : len(tokens)] = tokens
            flags.append(truncated)
        return result, flags

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """Ids int64 [n, context_length] (sot, tokens, eot, zero padding)."""
        return self.tokenize_with_info(texts)[0]

    def truncated(self, texts: str | Sequence[str]) -> list[bool]:
        """Whether each text has more than ``context_length - 2`` BPE tokens."""
        if isinstance(texts, str):
            texts = [texts]
        cl = self.context_length
        return [len(self.encode(t, max_tokens=cl - 1)) + 2 > cl for t in texts]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Inverse of encode (debugging); ``</w>`` becomes a space; pad ids (0) must be stripped by the
        caller."""
        if self._decoder is None:
            self._decoder = {v: k for k, v in self.encoder.items()}
        byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        text = "".join(self._decoder[int(t)] for t in ids)
        return bytearray(byte_decoder[c] for c in text).decode("utf-8", errors="replace").replace("</w>", " ")
