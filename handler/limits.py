"""The API's size limits, reported by ``GET /info`` and enforced by the request models
(:mod:`handler.schemas`) and the body reader (:mod:`handler.bodies`)."""

from __future__ import annotations

import math

__all__ = [
    "EF_MAX",
    "K_DEFAULT",
    "K_MAX",
    "MAX_EMBED_IMAGES",
    "MAX_EMBED_TEXTS",
    "MAX_REQUEST_TEXT_CHARS",
    "MAX_TEXT_CHARS",
    "OFFSET_MAX",
    "body_limit",
]

K_DEFAULT = 10
K_MAX = 100
OFFSET_MAX = 1000
EF_MAX = 4096
#: Longer texts are cut to this many characters before tokenization (CLIP keeps only the first
#: context_length - 2 tokens anyway); such a query is reported as truncated.
MAX_TEXT_CHARS = 20_000
MAX_EMBED_TEXTS = 64
#: Characters summed over one request's texts (after each is cut to MAX_TEXT_CHARS): bounds tokenizer work per
#: request (a 20k-character single word costs ~60-250 ms of BPE; 64 of them would be seconds).
MAX_REQUEST_TEXT_CHARS = 100_000
MAX_EMBED_IMAGES = 16


def body_limit(max_image_bytes: int) -> int:
    """Largest request body accepted: one base64 image at the byte limit plus 1 MiB of everything else."""
    return math.ceil(max_image_bytes / 3) * 4 + (1 << 20)
