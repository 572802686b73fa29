"""handler.bodies: strict JSON, numeric parameters and form fields."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.datastructures import FormData, UploadFile

from handler import bodies
from handler.core.errors import BadInputError, ImageTooLargeError
from handler.request_errors import InvalidRequestError


def code_of(fn: Any, *args: Any) -> str:
    with pytest.raises(BadInputError) as info:
        fn(*args)
    return info.value.code


def test_parse_json_is_strict() -> None:
    assert bodies.parse_json(b'{"a": [1, 2.5]}') == {"a": [1, 2.5]}
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
        assert code_of(bodies.parse_json, body) == "invalid_json", body[:20]


def test_numbers_and_forms() -> None:
    assert bodies.numbers({"k": " 5 ", "min_score": "0.25", "ef": "", "text": "a"}) == {
        "k": 5,
        "min_score": 0.25,
    }
    for raw in ("five", "1e999", "nan", "2.5"):
        name = "k" if raw in ("five", "2.5") else "min_score"
        with pytest.raises(InvalidRequestError):
            bodies.numbers({name: raw})

    def read(items: list[tuple[str, Any]], limit: int = 1000) -> dict[str, Any]:
        return asyncio.run(bodies.read_form(FormData(items), limit))

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
