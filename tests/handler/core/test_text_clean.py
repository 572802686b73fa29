"""handler.core.text_clean: open_clip's cleaning modes, and the one check of a manifest's ``clean`` mode that
both tokenizers use."""

from __future__ import annotations

import re

import pytest

from handler.core.errors import ArtifactError
from handler.core.hf_tokenizer import HfTokenizer
from handler.core.text_clean import CLEAN_MODES, clean_function
from handler.core.tokenizer import ClipTokenizer


def test_modes() -> None:
    text = "  A&amp;amp;B \t Foo_Bar, BAZ!  "
    assert clean_function("lower")(text) == "a&b foo_bar, baz!"
    assert clean_function("whitespace")(text) == "A&B Foo_Bar, BAZ!"
    assert clean_function("canonicalize")(text) == "ab foo bar baz"
    assert clean_function("whitespace")("caf\u00c3\u00a9") == "caf\u00e9"  # ftfy repairs mojibake


@pytest.mark.parametrize("mode", ["upper", "", None, ["lower"]])
def test_unknown_mode_is_an_artifact_error(mode: object) -> None:
    with pytest.raises(ArtifactError, match=r"unknown tokenizer clean mode .*expected one of"):
        clean_function(mode)  # type: ignore[arg-type]


def test_both_tokenizers_check_the_mode_the_same_way(tmp_path) -> None:
    """The mode is checked before any file is read, with the same message, in both tokenizers."""
    missing = tmp_path / "missing"
    message = re.escape(f"unknown tokenizer clean mode 'upper' (expected one of {CLEAN_MODES})")
    with pytest.raises(ArtifactError, match=message):
        ClipTokenizer(missing, clean="upper")
    with pytest.raises(ArtifactError, match=message):
        HfTokenizer(missing, context_length=8, pad_token_id=0, pad_token="<pad>", clean="upper")
