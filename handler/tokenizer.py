"""Torch-free CLIP BPE tokenizer: a faithful port of open_clip 3.3.0 ``SimpleTokenizer``.

Produces exactly the ids of ``open_clip.tokenizer.SimpleTokenizer`` (same cleaning: ftfy + double
``html.unescape`` + whitespace/lower/canonicalize; same regex; same BPE; ``<start_of_text>`` /
``<end_of_text>``; zero padding; truncation that keeps ``<end_of_text>`` at the last position).
``reduction_mask`` (random/syntax token dropping, training only) is not supported.

Behaviour inherited from open_clip that callers should know:

* the literal strings ``<start_of_text>`` / ``<end_of_text>`` in the input (any case in ``lower`` mode,
  lowercase only otherwise) are matched as special tokens and yield the sot/eot ids;
* lone surrogates are turned into U+FFFD by ftfy (no error);
* only the first ``context_length - 2`` BPE tokens are kept.

Construction reads only the first ~49k lines of the gzipped merges file (about 10-15 ms).
"""

from __future__ import annotations

import html
import itertools
import os
import string
import zlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import ftfy
import numpy as np
import regex as re

from handler.errors import ArtifactError, InvalidTextError

__all__ = [
    "CLEAN_MODES",
    "ClipTokenizer",
    "basic_clean",
    "bytes_to_unicode",
    "canonicalize_text",
    "get_pairs",
    "whitespace_clean",
]

CLEAN_MODES = ("lower", "whitespace", "canonicalize")
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
# open_clip keeps merges[1 : 49152 - 256 - 2 + 1]: line 0 is the version header.
N_MERGES = 49152 - 256 - 2
DEFAULT_CACHE_SIZE = 100_000


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """Reversible map utf-8 byte -> printable unicode char (as in GPT-2 / CLIP)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def get_pairs(word: Sequence[str]) -> set[tuple[str, str]]:
    """Set of adjacent symbol pairs of a word."""
    return set(itertools.pairwise(word))


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


def _read_merges(path: str | os.PathLike[str]) -> list[str]:
    """The N_MERGES merge lines ("a b") after the header, decompressing only as much as needed."""
    need = N_MERGES + 2  # header + merges + the start of the next line (so the last kept one is complete)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        parts: list[bytes] = []
        count = 0
        tail = raw
        while count < need and not d.eof:
            out = d.decompress(tail, 1 << 18)
            tail = d.unconsumed_tail
            if not out:
                break
            parts.append(out)
            count += out.count(b"\n")
        text = b"".join(parts).decode("utf-8", errors="strict")
    except (OSError, zlib.error, UnicodeDecodeError) as e:
        raise ArtifactError(f"cannot read BPE vocabulary {str(path)!r}: {e}") from e
    lines = text.split("\n", N_MERGES + 1)
    merges = lines[1 : N_MERGES + 1]
    if len(merges) != N_MERGES:
        raise ArtifactError(f"BPE vocabulary {str(path)!r} has {len(merges)} merges, expected {N_MERGES}")
    # open_clip uses tuple(line.split()); the fast path assumes every line is exactly "a b".
    block = "\n".join(merges)
    if block.count(" ") != N_MERGES or len(block.split()) != 2 * N_MERGES:
        raise ArtifactError(f"BPE vocabulary {str(path)!r}: malformed merge lines")
    return merges


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
    ) -> None:
        if clean not in _CLEAN_FNS:
            raise ArtifactError(f"unknown tokenizer clean mode {clean!r} (expected one of {CLEAN_MODES})")
        if not isinstance(context_length, int) or context_length < 2:
            raise ArtifactError(f"invalid context_length {context_length!r} (need an int >= 2)")
        self.vocab_path = Path(vocab_path)
        self.context_length = context_length
        self.clean = clean
        self._clean_fn = _CLEAN_FNS[clean]
        self.byte_encoder = bytes_to_unicode()

        merges = _read_merges(vocab_path)
        # Ranks keyed by the raw line "a b": no tuple building at load; bpe() looks up first + " " + second.
        self._ranks: dict[str, int] = dict(zip(merges, range(len(merges)), strict=True))
        byte_chars = list(self.byte_encoder.values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars]
        vocab += "\n".join(merges).replace(" ", "").split("\n")
        vocab += SPECIAL_TOKENS
        self.encoder: dict[str, int] = dict(zip(vocab, range(len(vocab)), strict=True))
        self._decoder: dict[int, str] | None = None
        self.vocab_size = len(self.encoder)

        self.sot_token_id = self.encoder[SPECIAL_TOKENS[0]]
        self.eot_token_id = self.encoder[SPECIAL_TOKENS[1]]
        for name, want, have in (("sot", sot_token_id, self.sot_token_id), ("eot", eot_token_id, self.eot_token_id)):
            if want is not None and want != have:
                raise ArtifactError(f"{name}_token_id {want} does not match the vocabulary ({have})")

        self._cache_size = cache_size
        self._cache: dict[str, str] = {t: t for t in SPECIAL_TOKENS}
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
        word = (*token[:-1], token[-1] + "</w>")
        if len(word) == 1:
            return token + "</w>"
        ranks = self._ranks
        while True:
            best = None
            best_rank = None
            for a, b in itertools.pairwise(word):
                r = ranks.get(a + " " + b)
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank = r
                    best = (a, b)
            if best is None:
                break
            first, second = best
            new_word: list[str] = []
            i = 0
            n = len(word)
            while i < n:
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if i < n - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(first)
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
        out = " ".join(word)
        if len(self._cache) >= self._cache_size:
            self._cache = {t: t for t in SPECIAL_TOKENS}
        self._cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` after cleaning, without sot/eot and without truncation."""
        if not isinstance(text, str):
            raise InvalidTextError(f"text must be a string, got {type(text).__name__}")
        try:
            cleaned = self._clean_fn(text)
            ids: list[int] = []
            enc = self.encoder
            be = self.byte_encoder
            for token in self._pat.findall(cleaned):
                token = "".join([be[b] for b in token.encode("utf-8")])
                ids.extend([enc[t] for t in self.bpe(token).split(" ")])
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
            tokens = [self.sot_token_id, *self.encode(text), self.eot_token_id]
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
        return [len(self.encode(t)) + 2 > self.context_length for t in texts]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Inverse of encode (debugging); ``</w>`` becomes a space; pad ids (0) must be stripped by the caller."""
        if self._decoder is None:
            self._decoder = {v: k for k, v in self.encoder.items()}
        byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        text = "".join(self._decoder[int(t)] for t in ids)
        return bytearray(byte_decoder[c] for c in text).decode("utf-8", errors="replace").replace("</w>", " ")
