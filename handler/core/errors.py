"""Exception types of the runtime. The service maps each to an HTTP status and a stable error code."""

from __future__ import annotations


class SearchError(Exception):
    """Base class: every error the runtime raises on purpose."""

    code = "error"
    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadInputError(SearchError):
    """The caller sent something unusable (maps to 4xx)."""

    code = "bad_request"
    status = 400


class InvalidImageError(BadInputError):
    """Bytes that are not a decodable image: empty, truncated, unknown format, corrupt."""

    code = "invalid_image"


class ImageTooLargeError(BadInputError):
    """An image over the byte or pixel limit, or a decompression bomb."""

    code = "image_too_large"
    status = 413


class ImageAspectRatioError(ImageTooLargeError):
    """An image whose long side is too many times its short side (checked on the header, before decoding)."""

    code = "aspect_ratio_too_large"


class InvalidTextError(BadInputError):
    code = "invalid_text"


class ArtifactError(SearchError):
    """A bundle or index that is missing, corrupt, or does not match what it claims (checksums, schema)."""

    code = "artifact_error"
    status = 503


class ModelMismatchError(ArtifactError):
    """Index built with another model than the bundle in use."""

    code = "model_mismatch"


class ConfigError(SearchError):
    """Invalid configuration value (environment variable or CLI option)."""

    code = "config_error"
