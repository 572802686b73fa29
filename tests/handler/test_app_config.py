"""handler.config.Settings.from_env: defaults, parsing, and messages naming the variable and the value."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from handler.config import ENV_VARS, Settings, available_cores
from handler.core.errors import ConfigError


def test_defaults() -> None:
    s = Settings.from_env({"MODEL_URI": "/opt/model"})
    assert s.model_uri == "/opt/model" and s.index_uri is None
    assert s.ort_threads == available_cores() and s.precision == "fp32"
    assert s.max_image_bytes == 4_500_000 and s.max_image_pixels == 50_000_000
    assert s.max_request_pixels == 100_000_000
    assert s.cors_origins == () and s.api_key is None and s.log_level == "INFO"
    assert s.index_refresh_seconds == 60.0 and s.cache_dir == "/tmp/clip-search"
    assert s.collection_root is None and s.presign_expiry_seconds == 3600 and s.model_id is None
    with pytest.raises(ValidationError, match="frozen"):  # immutable (a frozen pydantic model)
        s.precision = "int8"  # type: ignore[misc]


def test_all_variables() -> None:
    env = {
        "MODEL_URI": "s3://bucket/models/demo",
        "INDEX_URI": "s3://bucket/index",
        "ORT_THREADS": "3",
        "PRECISION": "INT8",
        "MAX_IMAGE_BYTES": "1_000_000",
        "MAX_IMAGE_PIXELS": "1000000",
        "CORS_ORIGINS": "https://a.example, http://localhost:3000/ ,",
        "API_KEY": "abc-123-XYZ",
        "LOG_LEVEL": "warn",
        "INDEX_REFRESH_SECONDS": "0",
        "CACHE_DIR": "/mnt/cache",
        "COLLECTION_ROOT": "/data/images",
        "PRESIGN_EXPIRY_SECONDS": "600",
        "MODEL_ID": "ViT-B-32/laion2b",
        "MAX_REQUEST_PIXELS": "3_000_000",
        "MODEL_VERIFY": "OFF",
        "INDEX_VERIFY": "off",
    }
    assert set(env) == set(ENV_VARS)
    s = Settings.from_env(env)
    assert s.max_request_pixels == 3_000_000
    assert (s.index_uri, s.ort_threads, s.precision, s.max_image_bytes) == (
        "s3://bucket/index",
        3,
        "int8",
        1_000_000,
    )
    assert s.cors_origins == ("https://a.example", "http://localhost:3000")
    assert s.api_key == "abc-123-XYZ" and "abc-123" not in repr(s) and "abc-123" not in str(s.public())
    assert s.public()["api_key_required"] is True
    assert s.log_level == "WARNING" and s.index_refresh_seconds == 0.0 and s.cache_dir == "/mnt/cache"
    assert (
        s.collection_root == "/data/images"
        and s.presign_expiry_seconds == 600
        and s.model_id == "ViT-B-32/laion2b"
    )
    assert s.model_verify is False and Settings.from_env({"MODEL_URI": "m"}).model_verify is True
    assert s.index_verify is False and Settings.from_env({"MODEL_URI": "m"}).index_verify is True
    # blank values mean "unset"
    blank = Settings.from_env({"MODEL_URI": "m", **{k: "" for k in ENV_VARS if k != "MODEL_URI"}})
    assert blank == Settings.from_env({"MODEL_URI": "m"})


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({}, "MODEL_URI is not set"),
        ({"MODEL_URI": "   "}, "MODEL_URI is not set"),
        ({"MODEL_URI": "gs://bucket/model"}, "MODEL_URI='gs://bucket/model'"),
        ({"MODEL_URI": "s3://"}, "MODEL_URI='s3://'"),
        ({"INDEX_URI": "s3:/bucket"}, "INDEX_URI='s3:/bucket'"),
        ({"INDEX_URI": "s3://Bad_Bucket!/x"}, "INDEX_URI='s3://Bad_Bucket!/x'"),
        ({"ORT_THREADS": "two"}, "ORT_THREADS='two': must be an integer"),
        ({"ORT_THREADS": "0"}, "ORT_THREADS='0'"),
        ({"PRECISION": "fp64"}, "PRECISION='fp64': must be one of fp32, fp16, int8"),
        ({"MODEL_VERIFY": "size"}, "MODEL_VERIFY='size': must be one of sha256, off"),
        ({"INDEX_VERIFY": "yes"}, "INDEX_VERIFY='yes': must be one of sha256, off"),
        ({"MAX_IMAGE_BYTES": "4.5MB"}, "MAX_IMAGE_BYTES='4.5MB'"),
        ({"MAX_IMAGE_BYTES": "-1"}, "MAX_IMAGE_BYTES='-1'"),
        ({"MAX_IMAGE_PIXELS": "0"}, "MAX_IMAGE_PIXELS='0'"),
        ({"MAX_REQUEST_PIXELS": "lots"}, "MAX_REQUEST_PIXELS='lots': must be an integer"),
        ({"CORS_ORIGINS": "example.com"}, "CORS_ORIGINS='example.com'"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud'"),
        ({"INDEX_REFRESH_SECONDS": "soon"}, "INDEX_REFRESH_SECONDS='soon'"),
        ({"INDEX_REFRESH_SECONDS": "-5"}, "INDEX_REFRESH_SECONDS='-5'"),
        ({"INDEX_REFRESH_SECONDS": "nan"}, "INDEX_REFRESH_SECONDS='nan'"),
        ({"PRESIGN_EXPIRY_SECONDS": "0"}, "PRESIGN_EXPIRY_SECONDS='0'"),
        ({"PRESIGN_EXPIRY_SECONDS": "999999999"}, "PRESIGN_EXPIRY_SECONDS='999999999'"),
        ({"COLLECTION_ROOT": "ftp://host/images"}, "COLLECTION_ROOT='ftp://host/images'"),
    ],
)
def test_invalid_values_are_named(env: dict[str, str], needle: str) -> None:
    full = {"MODEL_URI": "/opt/model", **env} if "MODEL_URI" not in env and env else env
    with pytest.raises(ConfigError) as info:
        Settings.from_env(full)
    assert needle in str(info.value)


def test_api_key_value_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"MODEL_URI": "m", "API_KEY": " secret-with-space "})
    assert "API_KEY" in str(info.value) and "secret" not in str(info.value)


def test_serve_refuses_bad_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from handler import serve

    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert serve.main([]) == 2
    assert "MODEL_URI is not set" in capsys.readouterr().err
    assert serve.main(["--bundle", "gs://nope/model"]) == 2
    assert "MODEL_URI='gs://nope/model'" in capsys.readouterr().err
    assert serve.main(["--bundle", str(tmp_path / "missing"), "--index", str(tmp_path / "no-index")]) == 2
    err = capsys.readouterr().err
    assert "model: artifact_error" in err and "manifest.json not found" in err


def test_one_declaration_per_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each variable is one Settings field (name, type, bounds, description); ENV_VARS derives from them and
    from_env() without a mapping reads os.environ (and never a .env file)."""
    assert tuple(name.upper() for name in Settings.model_fields) == ENV_VARS
    assert all(info.description for info in Settings.model_fields.values())
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODEL_URI", " /opt/model ")
    monkeypatch.setenv("ORT_THREADS", "7")
    s = Settings.from_env()
    assert (s.model_uri, s.ort_threads) == ("/opt/model", 7)
    assert (
        Settings.from_env({"MODEL_URI": "m"}).ort_threads == available_cores()
    )  # the mapping, not os.environ
    with pytest.raises(ValidationError):  # with_() validates too
        s.with_(ort_threads=1000)
