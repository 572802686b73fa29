"""handler.core.uri: the one location parser, and that each consumer (runtime, stores) goes through it."""

from __future__ import annotations

from pathlib import Path

import pytest

import handler.core.runtime as runtime
from handler.core.errors import ConfigError
from handler.core.storage import LocalStore, S3Store, open_store
from handler.core.uri import Location, is_s3, parse_uri, scheme_of


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/abs/dir", Location("file", path="/abs/dir")),
        ("rel/dir", Location("file", path="rel/dir")),
        ("~/x", Location("file", path="~/x")),
        ("file:///abs/dir", Location("file", path="/abs/dir")),
        ("file://localhost/abs/dir", Location("file", path="/abs/dir")),
        ("FILE:///a%20b/c%2Bd", Location("file", path="/a b/c+d")),
        ("s3://bkt", Location("s3", bucket="bkt")),
        ("s3://bkt/a/b/", Location("s3", bucket="bkt", key="a/b")),
        ("S3://bkt/x", Location("s3", bucket="bkt", key="x")),
        ("s3://bkt/a%20b", Location("s3", bucket="bkt", key="a%20b")),  # S3 keys are literal
    ],
)
def test_parse(uri: str, expected: Location) -> None:
    assert parse_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "  ",
        "s3://",
        "s3:/bkt/x",
        "gs://bkt/x",
        "http://host/x",
        "file://otherhost/x",
        "file:relative",
        "s3://bkt/x?versionId=1",
        "s3://BAD_bucket/x",
        "s3://bkt/a//b",
        "s3://bkt/../x",
        "file:///a%00b",
    ],
)
def test_malformed_uris_name_the_value(uri: str) -> None:
    with pytest.raises(ConfigError, match="invalid storage URI"):
        parse_uri(uri)


def test_key_check_can_be_deferred() -> None:
    assert parse_uri("s3://bkt/a//b", check_s3_key=False).key == "a//b"


def test_str_is_canonical() -> None:
    assert str(parse_uri("S3://bkt/a/")) == "s3://bkt/a"
    assert str(parse_uri("file://localhost/a%20b")) == "/a b"
    assert parse_uri("~/x").local_path() == Path.home() / "x"
    with pytest.raises(ValueError):
        parse_uri("s3://bkt/x").local_path()


def test_scheme_of_and_is_s3() -> None:
    assert [scheme_of(u) for u in ("S3://b", "file:///x", "/x", "a:b", "gs://b")] == [
        "s3",
        "file",
        "",
        "",
        "gs",
    ]
    assert is_s3("S3://b/k") and is_s3("s3://b") and not is_s3("/s3://b") and not is_s3("file:///x")


def test_open_store_uses_the_parser(tmp_path: Path) -> None:
    store = open_store("S3://bkt/p")
    assert isinstance(store, S3Store) and store.uri == "s3://bkt/p"
    local = open_store(f"file://localhost{tmp_path}/a%20b")
    assert isinstance(local, LocalStore) and local.root == tmp_path / "a b"


class _Reached(Exception):
    pass


def test_load_bundle_parses_like_open_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 #2: ``S3://`` passed config validation (open_store) and then loaded as a local path;
    ``file://localhost/...`` and ``%20`` did the same. load_bundle now parses with the same parser."""
    seen: list[object] = []

    def fake_fetch(uri: str, cache_dir: object, precision: str) -> Path:
        seen.append(("fetch", uri))
        raise _Reached

    def fake_read(path: Path) -> None:
        seen.append(("read", path))
        raise _Reached

    monkeypatch.setattr(runtime, "fetch_bundle", fake_fetch)
    monkeypatch.setattr(runtime, "read_manifest", fake_read)
    for uri in ("S3://bkt/models/x", "file://localhost/opt/my%20model", "file:///opt/m", "/opt/m2"):
        with pytest.raises(_Reached):
            runtime.load_bundle(uri)
    assert seen == [
        ("fetch", "s3://bkt/models/x"),
        ("read", Path("/opt/my model")),
        ("read", Path("/opt/m")),
        ("read", Path("/opt/m2")),
    ]
    with pytest.raises(ConfigError, match="unsupported scheme"):
        runtime.load_bundle("gs://bkt/x")
