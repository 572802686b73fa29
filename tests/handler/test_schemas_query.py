"""The ``terms`` and ``dedupe`` fields of a /search body (issue 17), below the HTTP layer."""

from __future__ import annotations

import base64

import pytest

from handler.core.dedupe import DEFAULT_THRESHOLD
from handler.core.errors import BadInputError
from handler.core.query import Term
from handler.limits import MAX_TEXT_CHARS
from handler.schemas import SearchJSON
from handler.validation import validate
from tests.handler.conftest import render_png

PNG = render_png("red", "circle")


def search(data: dict[str, object], max_bytes: int = 10**6) -> object:
    return validate(SearchJSON, data).query(max_bytes)


def test_terms_become_query_terms() -> None:
    req = search(
        {
            "terms": [
                {"text": "a\udc00", "weight": 2},  # an integer weight is a number; surrogates replaced
                {"image": "data:image/png;base64," + base64.b64encode(PNG).decode(), "weight": -0.5},
                {"id": 7},
                {"embedding": [1, 2.5]},
            ],
            "k": 3,
            "dedupe": {"threshold": 0.9},
        }
    )
    assert req.type == "terms" and req.k == 3 and req.dedupe == 0.9  # type: ignore[attr-defined]
    assert req.terms == [  # type: ignore[attr-defined]
        Term("text", "a\ufffd", 2.0, False, "'terms'[0]"),
        Term("image", PNG, -0.5, False, "'terms'[1]"),
        Term("id", 7, 1.0, False, "'terms'[2]"),
        Term("embedding", [1.0, 2.5], 1.0, False, "'terms'[3]"),
    ]
    assert req.query_terms() is req.terms  # type: ignore[attr-defined]
    assert req.log_fields()["terms"] == 4  # type: ignore[attr-defined]


def test_single_forms_are_one_term_and_dedupe_defaults() -> None:
    req = search({"text": "a dog", "dedupe": True})
    assert req.query_terms() == [Term("text", "a dog")]  # type: ignore[attr-defined]
    assert req.dedupe == DEFAULT_THRESHOLD  # type: ignore[attr-defined]
    assert search({"id": "x", "dedupe": {}}).dedupe == DEFAULT_THRESHOLD  # type: ignore[attr-defined]
    assert search({"id": "x", "dedupe": False}).dedupe is None  # type: ignore[attr-defined]
    assert search({"id": "x"}).dedupe is None  # type: ignore[attr-defined]


def test_long_texts_are_cut_and_budgeted() -> None:
    req = search({"terms": [{"text": "x" * (MAX_TEXT_CHARS + 5)}]})
    assert req.terms[0].precut and len(req.terms[0].value) == MAX_TEXT_CHARS  # type: ignore[attr-defined]
    with pytest.raises(BadInputError) as info:
        search({"terms": [{"text": "x" * MAX_TEXT_CHARS}] * 6})
    assert (info.value.status, info.value.code) == (413, "too_much_text")


def test_image_limit_names_the_term() -> None:
    with pytest.raises(BadInputError) as info:
        search({"terms": [{"text": "a"}, {"image": base64.b64encode(PNG).decode()}]}, max_bytes=10)
    assert info.value.code == "image_too_large" and "terms[1].image" in info.value.message
