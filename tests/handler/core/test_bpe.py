"""handler.core.bpe: the heap-based merge equals open_clip's rescanning BPE loop; the merges file checks."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handler.core.bpe import N_MERGES, bytes_to_unicode, get_pairs, merge, read_merges
from handler.core.errors import ArtifactError

# Overlapping merges ("a a" then "aa a" / "a aa"), merges that feed later ones, and equal-rank competition.
MERGES = ["a a", "b a", "aa a", "a aa", "ba a", "a b", "aa b", "ab a", "c a", "aa aa", "ca b", "b b"]
RANKS = {m: i for i, m in enumerate(MERGES)}


def open_clip_bpe(symbols: list[str]) -> list[str]:
    """open_clip 3.3.0 ``SimpleTokenizer.bpe``'s loop: merge the lowest-ranked pair everywhere, rescan."""
    word = tuple(symbols)
    while len(word) > 1:
        pairs = get_pairs(word)
        first, second = min(pairs, key=lambda p: RANKS.get(f"{p[0]} {p[1]}", float("inf")))
        if f"{first} {second}" not in RANKS:
            break
        new: list[str] = []
        i = 0
        while i < len(word):
            try:
                j = word.index(first, i)
            except ValueError:
                new.extend(word[i:])
                break
            new.extend(word[i:j])
            i = j
            if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                new.append(first + second)
                i += 2
            else:
                new.append(word[i])
                i += 1
        word = tuple(new)
    return list(word)


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(st.text(alphabet="abc", min_size=2, max_size=40))
def test_merge_equals_open_clip_loop(word: str) -> None:
    assert merge(list(word), RANKS, MERGES) == open_clip_bpe(list(word))


def test_bytes_to_unicode_is_a_printable_bijection() -> None:
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in table.values())


def _merges_file(path: Path, lines: list[str]) -> Path:
    path.write_bytes(gzip.compress(("#version: 0.2\n" + "\n".join(lines) + "\n").encode()))
    return path


def test_read_merges(tmp_path: Path) -> None:
    lines = [f"x{i} y{i}" for i in range(N_MERGES + 10)]
    assert read_merges(_merges_file(tmp_path / "ok.gz", lines)) == lines[:N_MERGES]


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ([f"x{i} y{i}" for i in range(100)], r"has \d+ merges, expected"),
        (["x y z", *(f"x{i} y{i}" for i in range(N_MERGES))], "malformed merge lines"),
    ],
)
def test_read_merges_errors(tmp_path: Path, lines: list[str], match: str) -> None:
    with pytest.raises(ArtifactError, match=match):
        read_merges(_merges_file(tmp_path / "bad.gz", lines))


def test_read_merges_unreadable(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("#version: 0.2\na b\n")
    with pytest.raises(ArtifactError, match="cannot read BPE vocabulary"):
        read_merges(tmp_path / "plain.txt")
    with pytest.raises(ArtifactError, match="cannot read BPE vocabulary"):
        read_merges(tmp_path / "missing.gz")
