"""handler.inputs and handler.schemas directly: strict JSON, base64 images, form fields, the request models
(the one validation) and their error codes, the pixel budget."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from starlette.datastructures import FormData, UploadFile

from handler import inputs, schemas
from handler.core.errors import BadInputError, ImageTooLargeError, InvalidTextError
from handler.inputs import InvalidRequestError
from handler.schemas import EmbeddingsJSON, SearchForm, SearchJSON, validate
from tests.handler.conftest import render_png

PNG = render_png("red", "circle")


def code_of(fn: Any, *args: Any) -> str:
    with pytest.raises(BadInputError) as info:
        fn(*args)
    return info.value.code


def search(data: Any, max_bytes: int = 10_000) -> inputs.SearchRequest:
    return validate(SearchJSON, data).query(max_bytes)


def test_parse_json_is_strict() -> None:
    assert inputs.parse_json(b'{"a": [1, 2.5]}') == {"a": [1, 2.5]}
    for body in (
        b"",
        b"  ",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b"{",
        b'"\xff"',
        b"[" * 5000 + b"]" * 5000,
        b"1" * 5000,
    ):
        assert code_of(inputs.parse_json, body) == "invalid_json", body[:20]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (base64.b64encode(b"abc").decode(), b"abc"),
        ("YWJj", b"abc"),
        ("YW\nJj\n", b"abc"),  # line-wrapped
        ("YWI", b"ab"),  # padding optional
        ("data:image/png;base64,YWJj", b"abc"),
        ("DATA:;base64,YWJj", b"abc"),
        (base64.urlsafe_b64encode(b"\xfb\xff").decode(), b"\xfb\xff"),  # URL-safe alphabet
    ],
)
def test_decode_image_field_accepts(value: str, expected: bytes) -> None:
    assert inputs.decode_image_field(value, 100) == expected


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("", "invalid_base64"),
        ("   ", "invalid_base64"),
        ("a", "invalid_base64"),
        ("!!!!", "invalid_base64"),
        ("data:image/png,raw", "invalid_base64"),
        ("=", "invalid_base64"),
        (5, "invalid_request"),
        ("A" * 200, "image_too_large"),
        ("A" * 100_000, "image_too_large"),
    ],
)
def test_decode_image_field_refuses(value: Any, code: str) -> None:
    assert code_of(inputs.decode_image_field, value, 100) == code


def test_clean_text() -> None:
    assert inputs.clean_text("a \ud800 b") == ("a \ufffd b", False)
    assert inputs.clean_text("x" * (inputs.MAX_TEXT_CHARS + 5)) == ("x" * inputs.MAX_TEXT_CHARS, True)
    for bad in ("", " \t\n", "a\x00b"):
        with pytest.raises(InvalidTextError):
            inputs.clean_text(bad)


def test_search_models_validate_and_build_requests() -> None:
    req = search({"text": "a red circle", "k": 3, "offset": 2, "min_score": 0, "ef": 64})
    assert (req.type, req.text, req.k, req.offset, req.min_score, req.ef) == (
        "text",
        "a red circle",
        3,
        2,
        0.0,
        64,
    )
    assert search({"image": base64.b64encode(PNG).decode()}, len(PNG)).image == PNG
    assert search({"embedding": [1, 0.5]}).embedding == [1.0, 0.5]
    assert search({"id": 7}).item_id == 7 and search({"id": "a\udc00"}).item_id == "a\ufffd"
    assert search({"text": "a", "image": None}).type == "text"  # null means absent
    assert validate(SearchForm, {"image": PNG, "k": 2}).query(len(PNG)).image == PNG


@pytest.mark.parametrize(
    ("data", "code", "needle"),
    [
        ([], "invalid_request", "JSON object"),
        ({}, "invalid_request", "exactly one"),
        ({"text": "a", "id": 1}, "invalid_request", "'text' and 'id'"),
        ({"text": "a", "q": 1}, "invalid_request", "unknown field(s) 'q'"),
        ({"text": "a", "k": "5"}, "invalid_request", "'k'"),
        ({"text": "a", "k": True}, "invalid_request", "'k'"),
        ({"text": "a", "k": 101}, "invalid_request", "'k'"),
        ({"text": "a", "offset": 1001}, "invalid_request", "'offset'"),
        # the schema's bounds are the validator's: min_score and ef (issue 12: they disagreed)
        ({"text": "a", "min_score": 1.5}, "invalid_request", "'min_score'"),
        ({"text": "a", "ef": inputs.EF_MAX + 1}, "invalid_request", "'ef'"),
        ({"text": ""}, "invalid_text", "empty"),
        ({"id": 1.5}, "invalid_request", "'id'"),
        ({"id": ""}, "invalid_request", "'id'"),
        ({"embedding": []}, "invalid_embedding", "empty"),
        ({"embedding": [True]}, "invalid_request", "'embedding'[0]"),
        ({"embedding": [10**400]}, "invalid_embedding", "too large"),
        ({"image": "@@@@"}, "invalid_base64", "base64"),
        ({"image": "A" * 400}, "image_too_large", "limit"),
    ],
)
def test_search_model_errors_keep_their_codes(data: Any, code: str, needle: str) -> None:
    with pytest.raises(BadInputError) as info:
        search(data, 100)
    assert (info.value.code, info.value.status) == (code, 413 if code == "image_too_large" else 400)
    assert needle in info.value.message


def test_the_documented_schema_is_the_validating_model() -> None:
    props = SearchJSON.model_json_schema()["properties"]
    assert SearchJSON.model_config["extra"] == "forbid" and SearchJSON.model_config["strict"] is True
    assert (props["k"]["minimum"], props["k"]["maximum"]) == (1, inputs.K_MAX)
    form = SearchForm.model_json_schema()["properties"]
    min_score = next(s for s in form["min_score"]["anyOf"] if s.get("type") == "number")
    ef = next(s for s in form["ef"]["anyOf"] if s.get("type") == "integer")
    assert (min_score["minimum"], min_score["maximum"], ef["maximum"]) == (-1, 1, inputs.EF_MAX)
    body = schemas.request_body(("application/json", SearchJSON))["requestBody"]["content"]
    assert body["application/json"]["schema"]["additionalProperties"] is False


def test_embeddings_model() -> None:
    req = validate(EmbeddingsJSON, {"text": ["a", "b"], "image": base64.b64encode(b"xy").decode()}).request(
        10
    )
    assert req.texts == ["a", "b"] and req.precut == [False, False] and req.images == [b"xy"]
    assert req.log_fields() == {"query_type": "text+image", "texts": 2, "images": 1, "image_bytes": 2}
    for data, code in (
        ({}, "invalid_request"),
        ({"text": []}, "invalid_request"),
        ({"text": [1]}, "invalid_request"),
        ({"text": ["a"] * (inputs.MAX_EMBED_TEXTS + 1)}, "invalid_request"),
        ({"image": ["!!"]}, "invalid_base64"),
        ({"text": "a", "x": 1}, "invalid_request"),
    ):
        assert code_of(lambda d: validate(EmbeddingsJSON, d).request(10), data) == code, data
    many = {
        "text": ["x" * inputs.MAX_TEXT_CHARS] * (inputs.MAX_REQUEST_TEXT_CHARS // inputs.MAX_TEXT_CHARS + 1)
    }
    with pytest.raises(inputs.TextBudgetError):
        validate(EmbeddingsJSON, many).request(10)


def test_numbers_and_forms() -> None:
    assert inputs.numbers({"k": " 5 ", "min_score": "0.25", "ef": "", "text": "a"}) == {
        "k": 5,
        "min_score": 0.25,
    }
    for raw in ("five", "1e999", "nan", "2.5"):
        name = "k" if raw in ("five", "2.5") else "min_score"
        with pytest.raises(InvalidRequestError):
            inputs.numbers({name: raw})

    def read(items: list[tuple[str, Any]], limit: int = 1000) -> dict[str, Any]:
        return asyncio.run(inputs.read_form(FormData(items), limit))

    def upload(data: bytes, name: str = "a.png") -> UploadFile:
        import io

        return UploadFile(io.BytesIO(data), size=len(data), filename=name)

    assert read([("text", "a"), ("k", "2"), ("id", "")]) == {"text": "a", "k": 2}  # empty fields are absent
    assert read([("image", upload(b"png!")), ("k", "2")]) == {"image": b"png!", "k": 2}
    assert read([("id", " 12 "), ("image", upload(b"", ""))]) == {"id": "12"}  # an empty file input is absent
    with pytest.raises(InvalidRequestError, match="unknown form field"):
        read([("query", "a")])
    with pytest.raises(InvalidRequestError, match="more than once"):
        read([("text", "a"), ("text", "b")])
    with pytest.raises(InvalidRequestError, match="not a file"):
        read([("text", upload(b"abc"))])
    with pytest.raises(ImageTooLargeError):
        read([("image", upload(b"x" * 11))], 10)


def test_pixel_budget_sums_headers() -> None:
    total = inputs.check_pixel_budget([PNG], 10**9, None)
    assert total > 0 and inputs.check_pixel_budget([PNG, PNG], 10**9, None) == 2 * total
    with pytest.raises(inputs.PixelBudgetError, match="pixels"):
        inputs.check_pixel_budget([PNG, PNG], 2 * total - 1, None)
    with pytest.raises(BadInputError, match=r"^image\[1\]: "):
        inputs.check_pixel_budget([PNG, b"not an image"], 10**9, None)
    assert json.loads(json.dumps(inputs.SearchRequest(type="text", text="abc").log_fields())) == {
        "query_type": "text",
        "k": inputs.K_DEFAULT,
        "offset": 0,
        "text_length": 3,
    }


def test_language_option_in_every_model() -> None:
    """NLLB's source-language code (issue 16) is a field of SearchJSON, SearchForm (and its form reader) and
    EmbeddingsJSON; its value is checked against the tokenizer later (unknown code: 400 invalid_text)."""
    assert validate(SearchJSON, {"text": "a", "language": "fra_Latn"}).query(10).language == "fra_Latn"
    assert validate(SearchJSON, {"text": "a", "language": ""}).query(10).language is None
    assert validate(SearchJSON, {"text": "a"}).query(10).language is None
    assert validate(EmbeddingsJSON, {"text": "a", "language": "fra_Latn"}).request(10).language == "fra_Latn"
    fields = asyncio.run(inputs.read_form(FormData([("text", "a"), ("language", "deu_Latn")]), 10))
    assert validate(SearchForm, fields).query(10).language == "deu_Latn"
    for model, data in (
        (SearchJSON, {"text": "a", "language": 5}),
        (SearchJSON, {"text": "a", "language": "x" * 33}),
        (EmbeddingsJSON, {"text": "a", "language": ["fra_Latn"]}),
    ):
        with pytest.raises(InvalidRequestError, match="'language'"):
            validate(model, data)
    for model in (SearchJSON, SearchForm, EmbeddingsJSON):
        assert "language" in model.model_json_schema()["properties"]
