"""The builder's sources, bundle and work dir parse locations with handler.core.uri (issue 12 #2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from index_builder.backends import read_bundle_manifest
from index_builder.errors import BuildError, UsageError
from index_builder.source_folder import FolderSource
from index_builder.source_jsonl import JsonlSource
from index_builder.source_s3 import S3Source
from index_builder.sources import open_source
from index_builder.workdir import default_work_dir


def test_open_source_file_uris_and_s3_case(tmp_path: Path) -> None:
    folder = tmp_path / "my photos"
    folder.mkdir()
    for uri in (f"file://localhost{tmp_path}/my%20photos", f"file://{tmp_path}/my%20photos", str(folder)):
        src = open_source(uri)
        assert isinstance(src, FolderSource), uri
    s3 = open_source("S3://bkt/photos/")
    assert isinstance(s3, S3Source) and s3.store.uri == "s3://bkt/photos"
    manifest = open_source("S3://bkt/list.jsonl")
    assert isinstance(manifest, JsonlSource) and manifest.uri == "s3://bkt/list.jsonl"
    with pytest.raises(UsageError, match="unsupported scheme"):
        open_source("gs://bkt/x")
    with pytest.raises(UsageError, match="not a valid bucket name"):
        open_source("s3://BAD_bucket/x")


def test_jsonl_item_uris(tmp_path: Path) -> None:
    (tmp_path / "a b.jpg").write_bytes(b"x")
    rows = [
        {"id": 1, "uri": f"file://localhost{tmp_path}/a%20b.jpg"},
        {"id": 2, "uri": "a b.jpg"},
        {"id": 3, "uri": "S3://bkt/k.jpg"},
    ]
    path = tmp_path / "list.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = JsonlSource(str(path), workers=1)
    src._stat = lambda item: None  # type: ignore[method-assign]  # no S3 here
    items = src.list()
    assert [it.uri for it in items] == [
        str(tmp_path / "a b.jpg"),
        str(tmp_path / "a b.jpg"),
        "s3://bkt/k.jpg",
    ]
    path.write_text(json.dumps({"id": 1, "uri": "file://otherhost/x.jpg"}) + "\n")
    with pytest.raises(BuildError, match="line 1: invalid storage URI"):
        JsonlSource(str(path), workers=1).list()


def test_work_dir_and_bundle_manifest_parse_uris(tmp_path: Path) -> None:
    assert default_work_dir(f"file://localhost{tmp_path}/out%20dir") == tmp_path / "out dir" / ".work"
    assert default_work_dir("S3://bkt/idx/") == default_work_dir("s3://bkt/idx")
    with pytest.raises(BuildError, match="no bundle is not a model bundle"):
        read_bundle_manifest(f"file://{tmp_path}/no%20bundle")
