"""The errors of request validation (service only; the runtime's are in :mod:`handler.core.errors`).
Each is a :class:`handler.core.errors.BadInputError`, rendered as ``{"error": {"code", "message"}}``."""

from __future__ import annotations

from handler.core.errors import BadInputError

__all__ = [
    "InvalidBase64Error",
    "InvalidJSONError",
    "InvalidRequestError",
    "PayloadTooLargeError",
    "PixelBudgetError",
    "TextBudgetError",
    "UnsupportedMediaTypeError",
]


class InvalidRequestError(BadInputError):
    code = "invalid_request"


class InvalidJSONError(BadInputError):
    code = "invalid_json"


class InvalidBase64Error(BadInputError):
    code = "invalid_base64"


class UnsupportedMediaTypeError(BadInputError):
    code = "unsupported_media_type"
    status = 415


class PayloadTooLargeError(BadInputError):
    code = "payload_too_large"
    status = 413


class PixelBudgetError(PayloadTooLargeError):
    code = "too_many_pixels"


class TextBudgetError(PayloadTooLargeError):
    code = "too_much_text"
