"""handler.fields: base64 images, text cleaning and the per-request pixel budget, with their error codes."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from handler import fields, limits
from handler.core.errors import BadInputError, InvalidTextError
from handler.request_errors import PixelBudgetError
from tests.handler.conftest import render_png

PNG = render_png("red", "circle")


def code_of(fn: Any, *args: Any) -> str:
    with pytest.raises(BadInputError) as info:
        fn(*args)
    return info.value.code


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
    assert fields.decode_image_field(value, 100) == expected


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
    assert code_of(fields.decode_image_field, value, 100) == code


def test_clean_text() -> None:
    assert fields.clean_text("a \ud800 b") == ("a \ufffd b", False)
    assert fields.clean_text("x" * (limits.MAX_TEXT_CHARS + 5)) == ("x" * limits.MAX_TEXT_CHARS, True)
    for bad in ("", " \t\n", "a\x00b"):
        with pytest.raises(InvalidTextError):
            fields.clean_text(bad)


def test_pixel_budget_sums_headers() -> None:
    total = fields.check_pixel_budget([PNG], 10**9, None)
    assert total > 0 and fields.check_pixel_budget([PNG, PNG], 10**9, None) == 2 * total
    with pytest.raises(PixelBudgetError, match="pixels"):
        fields.check_pixel_budget([PNG, PNG], 2 * total - 1, None)
    with pytest.raises(BadInputError, match=r"^image\[1\]: "):
        fields.check_pixel_budget([PNG, b"not an image"], 10**9, None)
