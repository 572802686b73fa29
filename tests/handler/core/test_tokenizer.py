"""Parity of handler.core.tokenizer.ClipTokenizer with open_clip's SimpleTokenizer (ids must be identical)."""

from __future__ import annotations

import gzip
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handler.core.errors import ArtifactError, InvalidTextError
from handler.core.tokenizer import MAX_CACHED_WORD, ClipTokenizer
from tests.handler.tok_corpus import EMOJI, HTML, PUNCT, SPACES, UNICODE, WORDS, corpus

open_clip = pytest.importorskip("open_clip")
from open_clip.tokenizer import SimpleTokenizer, default_bpe  # noqa: E402

VOCAB = default_bpe()
HYP = settings(
    max_examples=1500,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module", autouse=True)
def _torch_single_thread():
    """open_clip returns torch tensors; torch's intra-op pool is slow for tiny ops on a busy 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus_texts() -> list[str]:
    return corpus()


@pytest.fixture(scope="module")
def tok() -> ClipTokenizer:
    return ClipTokenizer(VOCAB)


@pytest.fixture(scope="module")
def ref() -> SimpleTokenizer:
    return SimpleTokenizer(VOCAB)


def _ref_ids(ref: SimpleTokenizer, texts: list[str], context_length: int | None = None) -> np.ndarray:
    return ref(texts, context_length=context_length).numpy()


def _assert_same(ours: np.ndarray, theirs: np.ndarray, texts: list[str]) -> None:
    assert ours.dtype == np.int64
    assert ours.shape == theirs.shape
    bad = np.flatnonzero((ours != theirs).any(axis=1))
    assert bad.size == 0, f"{bad.size} mismatches, first: {texts[bad[0]]!r}\n{ours[bad[0]]}\n{theirs[bad[0]]}"


def test_vocab_identical(tok: ClipTokenizer, ref: SimpleTokenizer) -> None:
    assert tok.encoder == ref.encoder
    assert {tuple(k.split(" ")): v for k, v in tok._ranks.items()} == ref.bpe_ranks
    assert (tok.sot_token_id, tok.eot_token_id, tok.vocab_size) == (49406, 49407, 49408)


def test_corpus_identical_to_open_clip(
    tok: ClipTokenizer, ref: SimpleTokenizer, corpus_texts: list[str]
) -> None:
    assert len(corpus_texts) >= 10_000
    ours, flags = tok.tokenize_with_info(corpus_texts)
    _assert_same(ours, _ref_ids(ref, corpus_texts), corpus_texts)
    # the corpus really exercises truncation, and the flags agree with the reference encoding
    lengths = [len(ref.encode(t)) + 2 for t in corpus_texts]
    assert flags == [n > 77 for n in lengths]
    assert 100 < sum(flags) < len(corpus_texts) // 2
    assert (ours[np.array(flags), -1] == tok.eot_token_id).all()


def test_get_tokenizer_vit_b_32(tok: ClipTokenizer, corpus_texts: list[str]) -> None:
    ref = open_clip.get_tokenizer("ViT-B-32")
    texts = corpus_texts[:2000]
    _assert_same(tok(texts), ref(texts).numpy(), texts)


def test_encode_matches(tok: ClipTokenizer, ref: SimpleTokenizer, corpus_texts: list[str]) -> None:
    for t in corpus_texts[:3000]:
        assert tok.encode(t) == ref.encode(t), t


@pytest.mark.parametrize("context_length", [2, 5, 32, 77, 128])
def test_other_context_lengths(context_length: int, ref: SimpleTokenizer, corpus_texts: list[str]) -> None:
    ours = ClipTokenizer(VOCAB, context_length=context_length)
    texts = corpus_texts[:1500]
    ids, flags = ours.tokenize_with_info(texts)
    _assert_same(ids, _ref_ids(ref, texts, context_length), texts)
    assert flags == ours.truncated(texts)
    assert (ids[np.array(flags), -1] == ours.eot_token_id).all()


@pytest.mark.parametrize("clean", ["whitespace", "canonicalize"])
def test_clean_modes(clean: str, corpus_texts: list[str]) -> None:
    ours = ClipTokenizer(VOCAB, context_length=32, clean=clean)
    ref = SimpleTokenizer(VOCAB, context_length=32, clean=clean)
    texts = corpus_texts[:2500]
    _assert_same(ours(texts), ref(texts).numpy(), texts)


def test_truncation_layout(tok: ClipTokenizer, ref: SimpleTokenizer) -> None:
    text = "word " * 100
    ids, flags = tok.tokenize_with_info([text, "a cat", ""])
    assert flags == [True, False, False]
    assert ids[0, 0] == 49406 and ids[0, -1] == 49407 and (ids[0] != 0).all()
    assert list(ids[1, :4]) == [49406, *ref.encode("a cat"), 49407][:4] and (ids[1, 4:] == 0).all()
    assert list(ids[2, :2]) == [49406, 49407] and (ids[2, 2:] == 0).all()
    # exactly 75 tokens fits, 76 does not
    w75 = " ".join(["cat"] * 75)
    assert tok.truncated([w75, w75 + " cat"]) == [False, True]
    assert tok(w75)[0, -1] == 49407 and tok(w75 + " cat")[0, -1] == 49407


def test_single_string_and_shapes(tok: ClipTokenizer) -> None:
    assert tok("a dog").shape == (1, 77)
    assert tok([]).shape == (0, 77)
    assert tok(("a", "b")).shape == (2, 77)


def test_special_token_strings_follow_open_clip(tok: ClipTokenizer, ref: SimpleTokenizer) -> None:
    for t in ["<start_of_text>", "x<end_of_text>y", "<END_OF_TEXT>", "<|endoftext|>"]:
        assert tok.encode(t) == ref.encode(t)
    assert tok.encode("<END_OF_TEXT>") == [49407]  # lower mode lowercases, then the special pattern matches


def test_lone_surrogates(tok: ClipTokenizer, ref: SimpleTokenizer) -> None:
    texts = ["\ud800", "a\udfffb", "\ud83d\ude00", "x\ud83d"]
    _assert_same(tok(texts), _ref_ids(ref, texts), texts)


def test_decode_roundtrip(tok: ClipTokenizer, ref: SimpleTokenizer) -> None:
    for t in ["a photo of a cat", "日本語 😀 café", "<start_of_text>x"]:
        ids = tok.encode(t)
        assert tok.decode(ids) == ref.decode(ids)


@HYP
@given(st.text(max_size=200))
def test_hypothesis_text(text: str) -> None:
    _compare_one(text)


_ODD_CATEGORIES = ["Cc", "Cf", "Cn", "Co", "Mn", "Me", "Zs", "Zl", "Zp", "So", "Sk", "Pd", "Nl", "No"]
_PIECES = WORDS + UNICODE + EMOJI + HTML + PUNCT + SPACES + ["&", "#", ";", "'", "s", "t", "\u0301", "\u200d"]


@HYP
@given(st.lists(st.sampled_from(_PIECES), max_size=30).map("".join))
def test_hypothesis_pieces(text: str) -> None:
    _compare_one(text)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(
    st.text(alphabet=st.one_of(st.characters(), st.characters(categories=_ODD_CATEGORIES)), max_size=60),
    st.sampled_from(["lower", "whitespace", "canonicalize"]),
)
def test_hypothesis_all_categories_and_modes(text: str, clean: str) -> None:
    ours, ref = _MODES[clean]
    assert list(ours(text)[0]) == ref(text)[0].tolist()


_REF = SimpleTokenizer(VOCAB)
_OURS = ClipTokenizer(VOCAB)
_MODES = {
    m: (ClipTokenizer(VOCAB, clean=m), SimpleTokenizer(VOCAB, clean=m))
    for m in ("lower", "whitespace", "canonicalize")
}


def _compare_one(text: str) -> None:
    ours = _OURS(text)[0]
    theirs = _REF(text)[0].numpy()
    assert (ours == theirs).all(), (text, ours, theirs)


def test_invalid_text(tok: ClipTokenizer) -> None:
    for bad in [None, 3, b"bytes", [b"x"], ["ok", 5]]:
        with pytest.raises(InvalidTextError):
            tok(bad)  # type: ignore[arg-type]


def test_bounded_cache(ref: SimpleTokenizer) -> None:
    small = ClipTokenizer(VOCAB, cache_size=50)
    texts = [f"word{i} zzz{i * 7}qq" for i in range(300)]
    _assert_same(small(texts), _ref_ids(ref, texts), texts)
    assert len(small._cache) <= 50


def test_cache_byte_budget(ref: SimpleTokenizer) -> None:
    """The cache is bounded in bytes (issue 11, item 2) and never holds long words."""
    budget = 20_000
    small = ClipTokenizer(VOCAB, cache_bytes=budget)
    texts = [f"w{i}x" + "ab" * (i % 40) for i in range(400)]
    _assert_same(small(texts), _ref_ids(ref, texts), texts)
    assert 0 < small._cache_bytes <= budget
    chars = sum(len(k) + len(v) for k, v in small._cache.items())
    assert 2 * chars <= budget and len(small._cache) > 10
    long_word = "q" * (MAX_CACHED_WORD + 1)
    small.bpe(long_word)
    small.bpe("q" * MAX_CACHED_WORD)
    assert long_word not in small._cache and "q" * MAX_CACHED_WORD in small._cache
    assert all(len(k) <= MAX_CACHED_WORD for k in small._cache)
    assert set(small._cache) >= {"<start_of_text>", "<end_of_text>"}  # special tokens survive a reset


def _rand(alphabet: str, n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


def _cjk(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(n))


LETTERS = "abcdefghijklmnopqrstuvwxyz"
OVERLONG = {
    "many short words": "a photo of a cat " * 600,
    "words then giant": "a photo of " + _rand(LETTERS, 1200, 1),
    "giant random word": _rand(LETTERS, 1500, 2),
    "giant repeated": "a" * 3001,
    "giant two letters": _rand("ab", 2000, 3),
    "giant upper/lower": _rand("aAbBeE", 1500, 4),
    "giant CJK": _cjk(600, 5),
    "giant emoji run": _rand("😀🐈🎉👍🏽❤️", 700, 6),
    "giant punctuation": _rand("!?.,;:-_()[]{}<>&", 1500, 7),
    "giant html-ish": "&amp;" * 400 + "cat",
    "74 words + giant": "cat " * 74 + _rand(LETTERS, 900, 8),
    "75 words + giant": "cat " * 75 + _rand(LETTERS, 900, 9),
    "mixed scripts": " ".join(["東京タワー", "café", "😀" * 50, _rand(LETTERS, 300, 10)] * 20),
}


@pytest.mark.parametrize("name", list(OVERLONG))
def test_overlong_texts_match_open_clip(name: str, tok: ClipTokenizer, ref: SimpleTokenizer) -> None:
    """Truncated ids of over-long texts (giant single words too) are open_clip's, at several context lengths."""
    text = OVERLONG[name]
    full = ref.encode(text)
    assert tok.encode(text) == full  # the whole encoding, not only the kept part
    for cl in (2, 5, 77, 128):
        ours = ClipTokenizer(VOCAB, context_length=cl)
        ids, flags = ours.tokenize_with_info([text])
        _assert_same(ids, _ref_ids(ref, [text], cl), [text])
        assert flags == [len(full) + 2 > cl] == ours.truncated([text])
        assert ours.encode(text, max_tokens=cl - 1)[: cl - 1] == full[: cl - 1]


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(
    st.text(alphabet="abeinrst", min_size=1, max_size=400) | st.text(alphabet="aab", min_size=1, max_size=400)
)
def test_hypothesis_long_words_bpe(word: str) -> None:
    """Heap BPE == open_clip's loop on long words over small alphabets (many ties and overlapping pairs)."""
    assert _OURS.bpe(word) == _REF.bpe(word)


def _best_time(fn: object, text: str, reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn([text])  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best


def test_giant_word_cost_is_bounded() -> None:
    """Issue 11, item 1: a giant single word cost O(n^2) (20k chars: ~15-60 s). A ratio, not an absolute time:
    a 20k-char word (the API's cap) against a short text, both merged from scratch."""
    tok = ClipTokenizer(VOCAB, cache_size=1)
    tiny = _best_time(tok, "a photo of a cat", reps=20)
    giant = _best_time(tok, _rand(LETTERS, 20_000, 13), reps=1)
    assert giant / max(tiny, 1e-4) < 20_000  # before: ~500,000x; after: ~1,000-3,000x (O(n log n) merges)


def _bundle(tmp_path: Path) -> Path:
    shutil.copy(VOCAB, tmp_path / "bpe_simple_vocab_16e6.txt.gz")
    return tmp_path


TEXT_SECTION = {
    "context_length": 77,
    "vocab_size": 49408,
    "tokenizer": {
        "type": "clip_bpe",
        "vocab_file": "bpe_simple_vocab_16e6.txt.gz",
        "clean": "lower",
        "reduction_mask": None,
        "sot_token_id": 49406,
        "eot_token_id": 49407,
        "pad_token_id": 0,
    },
}


def _section(**tok_overrides: object) -> dict:
    top = {k: tok_overrides.pop(k) for k in ("context_length", "vocab_size") if k in tok_overrides}
    return {**TEXT_SECTION, **top, "tokenizer": {**TEXT_SECTION["tokenizer"], **tok_overrides}}


def test_from_manifest(tmp_path: Path, ref: SimpleTokenizer) -> None:
    t = ClipTokenizer.from_manifest(_bundle(tmp_path), TEXT_SECTION)
    assert t.context_length == 77 and t.clean == "lower"
    assert (t("a photo") == _ref_ids(ref, ["a photo"])).all()
    t32 = ClipTokenizer.from_manifest(tmp_path, _section(context_length=32, clean="whitespace"))
    assert t32("A Photo").shape == (1, 32)
    assert (
        t32("A Photo") == SimpleTokenizer(VOCAB, context_length=32, clean="whitespace")("A Photo").numpy()
    ).all()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"reduction_mask": "simple"}, "reduction_mask"),
        ({"type": "hf"}, "tokenizer type"),
        ({"sot_token_id": 1}, "sot_token_id"),
        ({"eot_token_id": 2}, "eot_token_id"),
        ({"pad_token_id": 49407}, "pad_token_id"),
        ({"vocab_size": 50000}, "vocab_size"),
        ({"clean": "upper"}, "clean mode"),
        ({"context_length": 1}, "context_length"),
        ({"vocab_file": "missing.txt.gz"}, "cannot read"),
        ({"vocab_file": "../etc/passwd"}, "plain file name"),
    ],
)
def test_from_manifest_errors(tmp_path: Path, overrides: dict, match: str) -> None:
    with pytest.raises(ArtifactError, match=match):
        ClipTokenizer.from_manifest(_bundle(tmp_path), _section(**overrides))


def test_from_manifest_missing_keys(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError):
        ClipTokenizer.from_manifest(_bundle(tmp_path), {"context_length": 77})


def test_corrupt_vocab(tmp_path: Path) -> None:
    (tmp_path / "v.gz").write_bytes(b"not gzip")
    with pytest.raises(ArtifactError, match="cannot read"):
        ClipTokenizer(tmp_path / "v.gz")
    with gzip.open(tmp_path / "short.gz", "wt") as f:
        f.write("header\na b\n")
    with pytest.raises(ArtifactError, match="merges"):
        ClipTokenizer(tmp_path / "short.gz")


def test_construction_is_fast() -> None:
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        ClipTokenizer(VOCAB)
        times.append(time.perf_counter() - t0)
    assert min(times) < 0.5, times  # ~25-30 ms on a dev box; generous for loaded CI


def test_no_torch_import() -> None:
    code = (
        "import sys, handler.core.tokenizer; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'open_clip')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[3]
    res = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
