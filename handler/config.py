"""Service configuration from the environment, validated once at start.

Each variable is declared once, as a field of :class:`Settings` (its upper-case name is the variable, its
description the documentation); ``ENV_VARS`` lists them in declaration order (the deployment template sets
exactly these). Blank values mean unset. Every problem names the variable and the bad value (except
``API_KEY``, whose value is never echoed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from handler.core.cpus import usable_cpus
from handler.core.errors import ConfigError
from handler.core.images import DEFAULT_MAX_PIXELS

__all__ = ["DEFAULT_MAX_REQUEST_PIXELS", "ENV_VARS", "PRECISIONS", "Settings", "available_cores"]

PRECISIONS = ("fp32", "fp16", "int8")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Two images at the pixel limit: bounds the decoding work of one request (~3 s of PNG decoding per
#: 50 MP on one core), whatever the number of images /embeddings accepts.
DEFAULT_MAX_REQUEST_PIXELS = 2 * DEFAULT_MAX_PIXELS
MODEL_VERIFY_MODES = ("sha256", "off")
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("handler_config_environ", default=None)


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask where the platform has one)."""
    return usable_cpus()


class _Environ(PydanticBaseSettingsSource):
    """Each field from its upper-case variable, stripped; blank = unset. Reads the mapping given to
    :meth:`Settings.from_env` (else ``os.environ``); values stay strings for the field validators."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        env = _ENVIRON.get()
        raw = (os.environ if env is None else env).get(field_name.upper())
        return (raw.strip() or None) if isinstance(raw, str) else None, field_name.upper(), False

    def __call__(self) -> dict[str, Any]:
        out = {}
        for name, info in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(info, name)
            if value is not None:
                out[name] = value
        return out


def _uri(value: Any) -> Any:
    if isinstance(value, str):
        # validates scheme / bucket; imported lazily: boto3 is not imported
        from handler.core.storage import open_store

        try:
            open_store(value)
        except ConfigError as e:
            raise ValueError(e.message) from None
    return value


class Settings(BaseSettings):
    """Validated service settings; ``Settings.from_env()`` reads them (``Settings(...)`` in tests)."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", validate_default=False)

    model_uri: str = Field(description="required: bundle directory or s3:// prefix")
    index_uri: str | None = Field(None, description="index directory or s3:// prefix (unset: embedding-only)")
    ort_threads: int = Field(
        default_factory=available_cores,
        ge=1,
        le=256,
        description="onnxruntime threads (default: available cores)",
    )
    precision: Literal["fp32", "fp16", "int8"] = Field("fp32", description="model precision")
    max_image_bytes: int = Field(4_500_000, ge=1, le=1 << 31, description="largest image (decoded bytes)")
    max_image_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        ge=1,
        le=1 << 31,
        description="largest image (width * height, checked before decoding); the builder's default too, so "
        "every indexed image can be queried and thumbnailed",
    )
    cors_origins: tuple[str, ...] = Field(
        (), description="comma-separated origins ('*' allowed); unset: no CORS"
    )
    api_key: str | None = Field(
        None, repr=False, description="when set, every route but /health, / and /static/* needs x-api-key"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="log level"
    )
    index_refresh_seconds: float = Field(
        60.0,
        ge=0,
        allow_inf_nan=False,
        description="how often a warm instance checks the index pointer (0: always)",
    )
    cache_dir: str = Field("/tmp/clip-search", description="local cache of S3 objects")
    collection_root: str | None = Field(
        None, description="where the images are (overrides the manifest's source)"
    )
    presign_expiry_seconds: int = Field(
        3600, ge=1, le=7 * 24 * 3600, description="lifetime of presigned URLs for s3:// item images"
    )
    model_id: str | None = Field(
        None, description="model name in responses (default: bundle name/pretrained)"
    )
    max_request_pixels: int = Field(
        DEFAULT_MAX_REQUEST_PIXELS,
        ge=1,
        le=1 << 40,
        description="width * height summed over one request's images (413 above)",
    )
    model_verify: bool = Field(
        True,
        description="sha256 | off: checksum a local bundle's files at start; off suits "
        "a bundle baked into an immutable image and verified at image "
        "build (S3 bundles are always checked)",
    )
    index_verify: bool = Field(
        True,
        description="sha256 | off: checksum a local index's files at start (once per cache: a file "
        "verified before and unchanged since is trusted); off suits an index baked into an immutable "
        "image and verified at image build (S3 indexes are always checked)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environ(settings_cls)  # no .env files, no secrets dir: the environment only

    @field_validator("model_uri", "index_uri", "collection_root", mode="after")
    @classmethod
    def _check_uri(cls, value: str | None) -> str | None:
        return _uri(value)

    @field_validator("precision", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        value = value.upper() if isinstance(value, str) else value
        return "WARNING" if value == "WARN" else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        origins = tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip())
        for origin in origins:
            if origin != "*" and not (
                origin.startswith(("http://", "https://")) and origin.split("//", 1)[1]
            ):
                raise ValueError(f"{origin!r} is not an origin (expected '*' or scheme://host[:port])")
        return origins

    @field_validator("model_verify", "index_verify", mode="before")
    @classmethod
    def _verify(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value.lower() not in MODEL_VERIFY_MODES:
            raise ValueError(f"must be one of {', '.join(MODEL_VERIFY_MODES)}")
        return value.lower() == "sha256"

    @field_validator("api_key", mode="before")
    @classmethod
    def _api_key(cls, value: Any) -> Any:
        if isinstance(value, str) and value and (value != value.strip() or not value.isprintable()):
            raise ValueError("secret")  # replaced by a message that never shows the value (see _message)
        return value or None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the variables (``os.environ`` by default); raises :class:`ConfigError` naming
        the first bad one."""
        env = os.environ if environ is None else environ
        api_key = env.get("API_KEY")  # not stripped: surrounding whitespace is an error, not tolerated
        given: dict[str, Any] = {"api_key": api_key} if api_key else {}
        try:
            with _reading(env):
                return cls(**given)
        except ValidationError as e:
            raise ConfigError(_message(e, env)) from None

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (tests, CLI overrides), validated again."""
        with _reading({}):
            return type(self)(**{**self.model_dump(), **changes})

    def public(self) -> dict[str, Any]:
        """The settings safe to show in /info and logs (no API key, only whether one is set)."""
        out = self.model_dump(exclude={"api_key"})
        out["cors_origins"] = list(self.cors_origins)
        out["api_key_required"] = self.api_key is not None
        return out


ENV_VARS = tuple(name.upper() for name in Settings.model_fields)


@contextmanager
def _reading(env: Mapping[str, str]) -> Iterator[None]:
    token = _ENVIRON.set(env)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


def _message(error: ValidationError, env: Mapping[str, str]) -> str:
    """The first problem as ``NAME='raw value': what is wrong`` (API_KEY's value never shown)."""
    err = error.errors(include_url=False)[0]
    field = str(err["loc"][0]) if err["loc"] else ""
    name = field.upper()
    kind = err["type"]
    if name == "API_KEY":
        return (
            "API_KEY is invalid: it has leading/trailing whitespace or control characters, which an "
            "x-api-key header can never match (value not shown)"
        )
    if kind == "missing":
        return f"{name} is not set: give the model bundle's directory or s3://bucket/prefix"
    info = Settings.model_fields[field]
    low = high = None
    for meta in info.metadata:
        low = getattr(meta, "ge", low)
        high = getattr(meta, "le", high)
    if kind == "int_parsing":
        what = "must be an integer"
    elif kind in ("float_parsing", "finite_number") or (
        kind == "greater_than_equal" and info.annotation is float
    ):
        what = (
            f"must be a finite number >= {low:g}"
            if kind != "float_parsing"
            else "must be a number of seconds"
        )
    elif kind in ("greater_than_equal", "less_than_equal"):
        what = f"must be between {low} and {high}" if high is not None else f"must be >= {low}"
    elif kind == "literal_error":
        what = f"must be one of {', '.join(PRECISIONS if name == 'PRECISION' else LOG_LEVELS)}"
    else:  # a validator's ValueError (URIs, origins): its own words
        what = str(err.get("ctx", {}).get("error", err["msg"]))
    return f"{name}={env.get(name)!r}: {what}"
