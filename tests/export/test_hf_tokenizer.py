"""Runtime HF tokenizer (handler/core/hf_tokenizer.py, no torch) vs open_clip's HFTokenizer: identical ids."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.handler.tok_corpus import corpus
from tests.hf_fixtures import MULTILINGUAL, NLLB_CODES, save_tokenizer

# (fixture kind, open_clip tokenizer kwargs, context length): the settings of the real families.
CASES = {
    "siglip": ("unigram_t5", {"clean": "canonicalize"}, 64),
    "siglip2": ("unigram_gemma", {"clean": "canonicalize"}, 64),
    "xlm-roberta": ("unigram_xlmr", {}, 77),
    "clipa": ("wordpiece", {"strip_sep_token": True}, 32),
    "nllb": ("nllb", {}, 77),
}


def strings() -> list[str]:
    long = " ".join(MULTILINGUAL) * 20
    return ["", " ", "\n\t", *MULTILINGUAL, long, long[::-1], "🐱" * 500, *corpus(2000, seed=99)]


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    import open_clip

    from export.hf_text import hf_tokenizer_section
    from handler.core.hf_tokenizer import HfTokenizer

    kind, kwargs, cl = CASES[request.param]
    src = save_tokenizer(kind, tmp_path_factory.mktemp(kind))
    ref = open_clip.tokenizer.HFTokenizer(str(src), context_length=cl, **kwargs)
    bundle = tmp_path_factory.mktemp(f"bundle-{kind}")
    text = json.loads(json.dumps(hf_tokenizer_section(ref, bundle)))  # as read back from a manifest
    return request.param, ref, HfTokenizer.from_manifest(bundle, text), text


def test_ids_equal_open_clip_on_2000_strings(pair):
    name, ref, tok, _ = pair
    texts = strings()
    assert len(texts) >= 2000
    want = ref(texts).numpy()
    got = tok(texts)
    assert got.dtype == np.int64 and got.shape == want.shape
    bad = [texts[i][:40] for i in np.flatnonzero((got != want).any(1))]
    assert not bad, f"{name}: {len(bad)} strings differ, e.g. {bad[:3]}"


def test_manifest_records_real_pad_id_and_rules(pair):
    name, ref, tok, text = pair
    section = text["tokenizer"]
    assert section["type"] == "hf_tokenizers"
    assert section["pad_token_id"] == ref.tokenizer.pad_token_id
    assert section["strip_sep_token"] is (name == "clipa")
    ids = tok([""])[0]
    assert ids[-1] == section["pad_token_id"]  # padded with the real pad id (1 for T5 / xlm-roberta)


def test_truncation_flag(pair):
    _, ref, tok, _ = pair
    ids, flags = tok.tokenize_with_info(["a photo", " ".join(MULTILINGUAL) * 5])
    assert flags == [False, True]
    assert (ids == ref(["a photo", " ".join(MULTILINGUAL) * 5]).numpy()).all()


def test_bad_input_is_rejected(pair):
    from handler.core.errors import InvalidTextError

    name, _, tok, _ = pair
    with pytest.raises(InvalidTextError):
        tok([b"bytes"])
    with pytest.raises(
        InvalidTextError, match="no language option" if name != "nllb" else "unknown language"
    ):
        tok(["x"], language="xx_Xxxx")


def test_nllb_language_code_is_a_request_option(pair):
    """NLLB: the source-language code token (what `src_lang` / `set_src_lang_special_tokens` select)."""
    name, ref, tok, text = pair
    if name != "nllb":
        pytest.skip("language codes are NLLB's")
    assert sorted(text["tokenizer"]["language"]["codes"]) == sorted(NLLB_CODES) == tok.languages
    texts = strings()[:300]
    for code in NLLB_CODES:
        # transformers 5 re-applies `src_lang` on every call, so open_clip's set_language (which calls
        # set_src_lang_special_tokens) has no lasting effect; `src_lang` is the setting that sticks.
        ref.tokenizer.src_lang = code
        want = ref(texts).numpy()
        got = tok(texts, language=code)
        assert (got[:, 0] == ref.tokenizer.convert_tokens_to_ids(code)).all()
        assert (got == want).all(), code
    ref.tokenizer.src_lang = "eng_Latn"
    assert (tok(texts) == ref(texts).numpy()).all()  # default: the exporter's src_lang
