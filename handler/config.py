"""Service configuration from the environment, validated once at start.

Every problem names the variable and the bad value (except ``API_KEY``, whose value is never echoed).
The deployment template sets exactly these names::

    MODEL_URI               required   bundle directory or s3:// prefix
    INDEX_URI               optional   index directory or s3:// prefix (unset: embedding-only deployment)
    ORT_THREADS             default    available cores
    PRECISION               fp32       fp32 | fp16 | int8
    MAX_IMAGE_BYTES         4500000    largest accepted image (decoded bytes)
    MAX_IMAGE_PIXELS        50000000   largest accepted image (width * height, checked before decoding);
                                       the builder's default too, so every indexed image can be queried
                                       and thumbnailed (handler.core.preprocess.DEFAULT_MAX_PIXELS)
    MAX_REQUEST_PIXELS      100000000  width * height summed over the images of one request (413 above)
    CORS_ORIGINS            unset      comma-separated origins ("*" allowed); unset = no CORS headers
    API_KEY                 unset      when set, every route but /health, / and /static/* needs x-api-key
    LOG_LEVEL               INFO       DEBUG | INFO | WARNING | ERROR | CRITICAL
    INDEX_REFRESH_SECONDS   60         how often a warm instance checks the index pointer (0: every request)
    CACHE_DIR               /tmp/clip-search   local cache of S3 objects
    COLLECTION_ROOT         unset      where the collection's images are (overrides the index manifest's source)
    PRESIGN_EXPIRY_SECONDS  3600       lifetime of presigned URLs for s3:// item images
    MODEL_ID                unset      model name reported in responses (default: bundle name/pretrained)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from handler.core.cpus import usable_cpus
from handler.core.errors import ConfigError
from handler.core.preprocess import DEFAULT_MAX_PIXELS

__all__ = ["DEFAULT_MAX_REQUEST_PIXELS", "ENV_VARS", "PRECISIONS", "Settings", "available_cores"]

PRECISIONS = ("fp32", "fp16", "int8")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ENV_VARS = (
    "MODEL_URI", "INDEX_URI", "ORT_THREADS", "PRECISION", "MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "CORS_ORIGINS",
    "API_KEY", "LOG_LEVEL", "INDEX_REFRESH_SECONDS", "CACHE_DIR", "COLLECTION_ROOT", "PRESIGN_EXPIRY_SECONDS",
    "MODEL_ID", "MAX_REQUEST_PIXELS",
)
#: Two images at the pixel limit: bounds the decoding work of one request (~3 s of PNG decoding per
#: 50 MP on one core), whatever the number of images /embeddings accepts.
DEFAULT_MAX_REQUEST_PIXELS = 2 * DEFAULT_MAX_PIXELS


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask where the platform has one)."""
    return usable_cpus()


def _get(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value, stripped; None when unset or blank."""
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int | None = None) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: must be an integer") from None
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(f"{name}={raw!r}: must be {bounds}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: must be a number of seconds") from None
    if not math.isfinite(value) or value < low:
        raise ConfigError(f"{name}={raw!r}: must be a finite number >= {low:g}")
    return value


def _uri(env: Mapping[str, str], name: str, required: bool) -> str | None:
    raw = _get(env, name)
    if raw is None:
        if required:
            raise ConfigError(f"{name} is not set: give the model bundle's directory or s3://bucket/prefix")
        return None
    from handler.core.storage import (
        open_store,  # validates the scheme / bucket; lazily, boto3 is not imported
    )

    try:
        open_store(raw)
    except ConfigError as e:
        raise ConfigError(f"{name}={raw!r}: {e}") from None
    return raw


def _origins(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = _get(env, "CORS_ORIGINS")
    if raw is None:
        return ()
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not (origin.startswith(("http://", "https://")) and len(origin.split("//", 1)[1]) > 0):
            raise ConfigError(
                f"CORS_ORIGINS={raw!r}: {origin!r} is not an origin (expected '*' or scheme://host[:port])"
            )
    return origins


@dataclass(frozen=True)
class Settings:
    """Validated service settings (see the module docstring for the variables)."""

    model_uri: str
    index_uri: str | None = None
    ort_threads: int = field(default_factory=available_cores)
    precision: str = "fp32"
    max_image_bytes: int = 4_500_000
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    cors_origins: tuple[str, ...] = ()
    api_key: str | None = field(default=None, repr=False)
    log_level: str = "INFO"
    index_refresh_seconds: float = 60.0
    cache_dir: str = "/tmp/clip-search"
    collection_root: str | None = None
    presign_expiry_seconds: int = 3600
    model_id: str | None = None
    max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the variables; raises :class:`ConfigError` naming the first bad one."""
        env = os.environ if environ is None else environ
        precision = (_get(env, "PRECISION") or "fp32").lower()
        if precision not in PRECISIONS:
            raise ConfigError(f"PRECISION={env.get('PRECISION')!r}: must be one of {', '.join(PRECISIONS)}")
        log_level = (_get(env, "LOG_LEVEL") or "INFO").upper()
        if log_level == "WARN":
            log_level = "WARNING"
        if log_level not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL={env.get('LOG_LEVEL')!r}: must be one of {', '.join(LOG_LEVELS)}")
        api_key = env.get("API_KEY")
        if api_key and (api_key != api_key.strip() or not api_key.isprintable()):
            raise ConfigError("API_KEY is invalid: it has leading/trailing whitespace or control characters, "
                              "which an x-api-key header can never match (value not shown)")
        collection_root = _get(env, "COLLECTION_ROOT")
        if collection_root is not None:
            _uri(env, "COLLECTION_ROOT", required=False)
        return cls(
            model_uri=_uri(env, "MODEL_URI", required=True) or "",
            index_uri=_uri(env, "INDEX_URI", required=False),
            ort_threads=_int(env, "ORT_THREADS", available_cores(), 1, 256),
            precision=precision,
            max_image_bytes=_int(env, "MAX_IMAGE_BYTES", 4_500_000, 1, 1 << 31),
            max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS, 1, 1 << 31),
            cors_origins=_origins(env),
            api_key=api_key or None,
            log_level=log_level,
            index_refresh_seconds=_float(env, "INDEX_REFRESH_SECONDS", 60.0, 0.0),
            cache_dir=_get(env, "CACHE_DIR") or "/tmp/clip-search",
            collection_root=collection_root,
            presign_expiry_seconds=_int(env, "PRESIGN_EXPIRY_SECONDS", 3600, 1, 7 * 24 * 3600),
            model_id=_get(env, "MODEL_ID"),
            max_request_pixels=_int(env, "MAX_REQUEST_PIXELS", DEFAULT_MAX_REQUEST_PIXELS, 1, 1 << 40),
        )

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (tests, CLI overrides)."""
        return replace(self, **changes)

    def public(self) -> dict[str, Any]:
        """The settings safe to show in /info and logs (no API key, only whether one is set)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "api_key"}
        out["cors_origins"] = list(self.cors_origins)
        out["api_key_required"] = self.api_key is not None
        return out
