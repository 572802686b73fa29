"""Builds against the real SeaweedFS S3 server: S3 destination, S3 source prefix, JSONL with s3:// uris,
a bundle on S3, and the server going away in the middle of publishing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import index_builder.build as build_module
from handler.core.index import load_index
from handler.core.storage import ObjectInfo, Store, open_store
from index_builder.publish import list_versions
from index_builder.workdir import default_work_dir
from tests.conftest import index_file_key
from tests.index_builder.conftest import build_args, collection, current, ids_of, read_version

pytestmark = pytest.mark.s3


def upload_tree(client: Any, bucket: str, prefix: str, root: Path) -> list[str]:
    keys = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(root).as_posix()}"
            client.upload_file(str(path), bucket, key)
            keys.append(key)
    return keys


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Default work dirs of S3 destinations go under $XDG_CACHE_HOME, S3 bundles are cached in $CACHE_DIR."""
    home = tmp_path / "cache-home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.setenv("CACHE_DIR", str(tmp_path / "bundle-cache"))
    return home


def test_build_folder_into_s3(s3_server, demo_bundle: Path, tmp_path: Path, cli, cache_home: Path) -> None:
    bucket = s3_server.make_bucket()
    src, dest = tmp_path / "src", f"s3://{bucket}/indexes/demo"
    paths = collection(src, 64, seed=40)
    r = cli(*build_args(src, demo_bundle, dest))
    assert r.rc == 0, r.err
    v = read_version(dest)
    assert {row["id"] for row in v["items"]} == ids_of(paths, src) and v["manifest"]["count"] == 64
    index = load_index(dest, cache_dir=tmp_path / "cache")
    assert index.version == v["version"] and index.count == 64
    assert not default_work_dir(dest).exists()  # cleaned after publishing

    r = cli(*build_args(src, demo_bundle, dest))  # nothing changed: nothing published
    assert r.rc == 0 and "embedded 0" in r.out and "unchanged 64" in r.out and "no changes" in r.out
    assert current(dest) == v["version"]
    r = cli(*build_args(src, demo_bundle, dest, "--M", 8))  # another HNSW setting: a new version
    assert r.rc == 0 and "embedded 0" in r.out and "unchanged 64" in r.out and "published version" in r.out
    assert not default_work_dir(dest).exists()  # including the downloaded previous version
    info = cli("info", dest, "--json").json()
    assert info["count"] == 64 and len(info["versions"]) == 2 and info["version"] == current(dest)
    r = cli("verify", dest, "--bundle", demo_bundle, "--all")
    assert r.rc == 0, r.err
    # tamper with the served embeddings on S3: verify names the object
    key = "indexes/demo/" + index_file_key(open_store(str(dest)), current(dest), "embeddings")
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=b"\x93NUMPY" + b"\0" * 10)
    r = cli("verify", dest)
    assert r.rc == 1 and key.split("/", 2)[2] in r.err


def test_build_from_s3_prefix_with_s3_bundle(
    s3_server, demo_bundle: Path, tmp_path: Path, cli, cache_home: Path
) -> None:
    bucket = s3_server.make_bucket()
    client = s3_server.client()
    src = tmp_path / "src"
    paths = collection(src, 48, seed=41)
    (src / "readme.txt").write_text("not an image")
    (src / "bad").mkdir()
    (src / "bad" / "empty.jpg").write_bytes(b"")
    upload_tree(client, bucket, "photos/2024", src)
    upload_tree(client, bucket, "models/demo", demo_bundle)
    source, bundle, dest = f"s3://{bucket}/photos/2024", f"s3://{bucket}/models/demo", tmp_path / "index"

    r = cli(*build_args(source, bundle, dest))
    assert r.rc == 0, r.err
    v = read_version(dest)
    assert {row["id"] for row in v["items"]} == ids_of(paths, src)  # keys relative to the prefix
    row = next(x for x in v["items"] if x["id"] == "set_b/img_00002.jpg")
    assert row["uri"] == f"s3://{bucket}/photos/2024/set_b/img_00002.jpg" and row["etag"]
    assert row["metadata"] == json.loads((src / "set_b/img_00002.json").read_text())
    assert [(e["id"], e["reason"]) for e in v["errors"]] == [("bad/empty.jpg", "empty")]
    assert v["manifest"]["source"] == source
    assert (
        v["manifest"]["model_fingerprint"]
        == json.loads((demo_bundle / "manifest.json").read_text())["model_fingerprint"]
    )

    # incremental over S3: unchanged objects are not downloaded again; a replaced object is
    client.put_object(Bucket=bucket, Key="photos/2024/set_b/img_00002.jpg", Body=paths[3].read_bytes())
    client.delete_object(Bucket=bucket, Key="photos/2024/img_00000.jpg")
    r = cli(*build_args(source, bundle, dest))
    assert r.rc == 0, r.err
    stats = read_version(dest)["manifest"]["stats"]
    # the replaced object holds another image's bytes: its vector is reused by content hash, not recomputed
    assert (stats["embedded"], stats["reused"], stats["changed"], stats["removed"], stats["unchanged"]) == (
        0,
        1,
        1,
        1,
        46,
    )


def test_jsonl_with_s3_and_local_uris(s3_server, demo_bundle: Path, tmp_path: Path, cli) -> None:
    bucket = s3_server.make_bucket()
    client = s3_server.client()
    paths = collection(tmp_path / "imgs", 8, seed=42)
    for i, p in enumerate(paths[:4]):
        client.upload_file(str(p), bucket, f"objects/{i}.jpg")
    lines = [{"id": f"s3-{i}", "uri": f"s3://{bucket}/objects/{i}.jpg", "n": i} for i in range(4)]
    lines += [{"id": f"local-{i}", "uri": str(p)} for i, p in enumerate(paths[4:])]
    lines.append({"id": "gone", "uri": f"s3://{bucket}/objects/missing.jpg"})
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    client.upload_file(str(manifest), bucket, "lists/list.jsonl")
    for source in (manifest, f"s3://{bucket}/lists/list.jsonl"):
        dest = tmp_path / f"index-{'s3' if str(source).startswith('s3') else 'local'}"
        r = cli(*build_args(source, demo_bundle, dest))
        assert r.rc == 0, r.err
        v = read_version(dest)
        assert [x["id"] for x in v["items"]] == [x["id"] for x in lines[:-1]]
        assert v["items"][2]["metadata"] == {"n": 2} and v["items"][2]["etag"]
        assert [(e["id"], e["reason"]) for e in v["errors"]] == [("gone", "unreadable")]
        r = cli(*build_args(source, demo_bundle, dest))
        assert r.rc == 0 and "unchanged 8" in r.out


class FailingStore(Store):
    """Delegates to an S3 store; stops the S3 server right before the pointer write ("pointer") or before
    the second version file upload ("files")."""

    def __init__(self, inner: Store, server: Any, when: str):
        self.inner, self.server, self.when = inner, server, when
        self.uri = inner.uri
        self.uploads = 0
        self.tripped = False

    def _trip(self) -> None:
        self.tripped = True
        self.server.stop()

    def write_bytes(self, key: str, data: bytes) -> None:
        if self.when == "pointer" and key == "CURRENT":
            self._trip()
        self.inner.write_bytes(key, data)

    def upload_file(self, key: str, local_path: Any) -> None:
        self.uploads += 1
        if self.when == "files" and self.uploads == 2:
            self._trip()
        self.inner.upload_file(key, local_path)

    def read_bytes(self, key: str) -> bytes:
        return self.inner.read_bytes(key)

    def download_file(self, key: str, local_path: Any) -> None:
        self.inner.download_file(key, local_path)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix, page_size=page_size)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def delete_prefix(self, prefix: str) -> int:
        return self.inner.delete_prefix(prefix)

    def uri_for(self, key: str) -> str:
        return self.inner.uri_for(key)


@pytest.mark.parametrize("when", ["pointer", "files"])
def test_s3_down_mid_publish(
    s3_server,
    demo_bundle: Path,
    tmp_path: Path,
    cli,
    cache_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    when: str,
) -> None:
    bucket = s3_server.make_bucket()
    src, dest = tmp_path / "src", f"s3://{bucket}/index"
    collection(src / "a", 24, seed=43)
    assert cli(*build_args(src, demo_bundle, dest)).rc == 0
    v1 = current(dest)
    collection(src / "b", 20, seed=44)

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # fail fast while the server is down
    stores: list[FailingStore] = []

    def failing_open_store(uri: Any) -> Store:
        stores.append(FailingStore(open_store(uri), s3_server, when))
        return stores[-1]

    monkeypatch.setattr(build_module, "open_store", failing_open_store)
    try:
        r = cli(*build_args(src, demo_bundle, dest))
    finally:
        s3_server.start()
    assert stores and stores[0].tripped
    assert r.rc == 1 and "Traceback" not in r.err
    assert "publishing version" in r.err and f"still serves version {v1}" in r.err and "re-run" in r.err
    assert current(dest) == v1
    assert load_index(dest, cache_dir=tmp_path / "cache").version == v1  # the old version is still served

    monkeypatch.setattr(build_module, "open_store", open_store)
    r = cli(*build_args(src, demo_bundle, dest))
    assert r.rc == 0, r.err
    stats = read_version(dest)["manifest"]["stats"]
    assert (stats["resumed"], stats["embedded"], stats["unchanged"], stats["added"]) == (20, 0, 24, 20)
    index = load_index(dest, cache_dir=tmp_path / "cache")
    assert index.count == 44 and index.version == current(dest) != v1
    assert sorted(list_versions(dest)) == [v1, index.version]  # the unpublished attempt was removed


def test_s3_key_with_empty_segment_is_an_item_error(
    s3_server, demo_bundle: Path, tmp_path: Path, cli, cache_home: Path
) -> None:
    """Issue 11 #9: a key like ``photos/a//b.jpg`` (legal in S3) aborted every build with a ValueError."""
    bucket = s3_server.make_bucket()
    client = s3_server.client()
    paths = collection(tmp_path / "src", 4, seed=45)
    upload_tree(client, bucket, "photos", tmp_path / "src")
    client.put_object(Bucket=bucket, Key="photos/odd//b.jpg", Body=paths[0].read_bytes())
    listed = [
        o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="photos/odd").get("Contents", [])
    ]
    if listed != ["photos/odd//b.jpg"]:
        pytest.skip(
            f"this S3 server does not keep empty key segments (lists {listed}); see test_source_s3.py"
        )
    r = cli(*build_args(f"s3://{bucket}/photos", demo_bundle, tmp_path / "index"))
    assert r.rc == 0, r.err
    v = read_version(tmp_path / "index")
    assert v["manifest"]["count"] == 4
    assert [(e["id"], e["reason"]) for e in v["errors"]] == [("odd//b.jpg", "invalid_key")]
