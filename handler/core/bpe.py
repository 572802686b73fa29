"""CLIP byte-level BPE: the merges file and the merge loop of open_clip 3.3.0 ``SimpleTokenizer``.

``merge`` applies the same merges in the same order as open_clip's ``bpe`` in O(n log n) (a heap instead of
open_clip's rescan per merge, which made a 20k-char single word cost ~15 s). ``read_merges`` reads only the
first ~49k lines of the gzipped merges file (about 10-15 ms).
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Sequence
from functools import lru_cache
from heapq import heapify, heappop, heappush

from handler.core.errors import ArtifactError

__all__ = ["N_MERGES", "bytes_to_unicode", "get_pairs", "merge", "read_merges"]

# open_clip keeps merges[1 : 49152 - 256 - 2 + 1]: line 0 is the version header.
N_MERGES = 49152 - 256 - 2


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """Reversible map utf-8 byte -> printable unicode char (as in GPT-2 / CLIP)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
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


def read_merges(path: str | os.PathLike[str]) -> list[str]:
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


def merge(symbols: list[str], ranks: dict[str, int], merges: list[str]) -> list[str]:
    """open_clip's BPE loop in O(n log n): the same merges in the same order, found with a heap.

    open_clip repeatedly takes the lowest-ranked adjacent pair and merges all its occurrences left to right.
    Here each adjacent pair sits in a heap as (rank, position of its left symbol); symbols form a linked list
    over their start positions. A round pops every entry of the lowest rank and applies those still valid
    in position order, which is that same left-to-right pass (overlaps like "a a a" resolve identically).
    A merge creates pairs with the merged symbol, never the pair being merged, so no round feeds itself;
    pairs it creates enter the heap and compete in later rounds exactly as in open_clip's next ``min``.
    """
    n = len(symbols)
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    prv = list(range(-1, n - 1))
    shift = (
        n.bit_length()
    )  # heap keys are ints (rank << shift | position): much faster to compare than tuples
    mask = (1 << shift) - 1
    heap = [
        r << shift | i
        for i in range(n - 1)
        if (r := ranks.get(symbols[i] + " " + symbols[i + 1])) is not None
    ]
    heapify(heap)
    while heap:
        rank = heap[0] >> shift
        positions = []
        while heap and heap[0] >> shift == rank:
            positions.append(heappop(heap) & mask)
        first, second = merges[rank].split(" ")
        merged = first + second
        for i in positions:  # ascending: equal ranks pop in position order
            j = nxt[i]
            if j < 0 or symbols[i] != first or symbols[j] != second:
                continue  # stale: one side was merged since this pair was pushed
            symbols[i] = merged
            symbols[j] = ""
            k = nxt[j]
            nxt[i] = k
            if k >= 0:
                prv[k] = i
                r = ranks.get(merged + " " + symbols[k])
                if r is not None:
                    heappush(heap, r << shift | i)
            p = prv[i]
            if p >= 0:
                r = ranks.get(symbols[p] + " " + merged)
                if r is not None:
                    heappush(heap, r << shift | p)
    out = []
    i = 0
    while i >= 0:
        out.append(symbols[i])
        i = nxt[i]
    return out
