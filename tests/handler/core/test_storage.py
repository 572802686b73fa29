"""handler.core.storage on local directories and on a real S3 server (SeaweedFS)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from handler.core.errors import ArtifactError, ConfigError
from handler.core.storage import (
    LocalStore,
    NotFoundError,
    ObjectInfo,
    S3Store,
    StorageError,
    Store,
    fetch_dir,
    file_digest,
    open_store,
)

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store of each kind."""
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    server = request.getfixturevalue("s3_server")
    bucket = server.make_bucket()
    return open_store(f"s3://{bucket}/some/prefix")


def test_round_trip(store: Store, tmp_path: Path) -> None:
    assert not store.exists("a/b.txt")
    store.write_bytes("a/b.txt", b"hello")
    assert store.exists("a/b.txt")
    assert store.read_bytes("a/b.txt") == b"hello"
    store.write_bytes("a/b.txt", b"replaced")
    assert store.read_bytes("a/b.txt") == b"replaced"
    store.write_bytes("empty", b"")
    assert store.read_bytes("empty") == b""

    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(70_000))
    store.upload_file("up/src.bin", src)
    dest = tmp_path / "out" / "dest.bin"
    store.download_file("up/src.bin", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert not [p for p in dest.parent.iterdir() if p.name != "dest.bin"], "temp files left behind"

    store.delete("a/b.txt")
    assert not store.exists("a/b.txt")
    store.delete("a/b.txt")  # missing: not an error
    assert not store.exists("a")  # directories are not objects


def test_missing_objects(store: Store, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        store.read_bytes("nope/missing.json")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ArtifactError)
    assert "missing.json" in str(info.value)
    dest = tmp_path / "keep.txt"
    dest.write_text("old")
    with pytest.raises(FileNotFoundError):
        store.download_file("nope/missing.json", dest)
    assert dest.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "store") == ["keep.txt"]
    with pytest.raises(FileNotFoundError):
        store.upload_file("x", tmp_path / "no-such-file")


def test_listing(store: Store) -> None:
    keys = ["a/b.txt", "a/bc/d.txt", "a/b/c.txt", "a-c", "ab", "z/1", "z/2/3/4"]
    for i, key in enumerate(keys):
        store.write_bytes(key, b"x" * i)
    everything = list(store.list())
    if isinstance(store, LocalStore):
        assert [o.key for o in everything] == sorted(keys)
    everything.sort(key=lambda o: o.key)  # S3-compatible servers may list directory by directory
    assert [o.key for o in everything] == sorted(keys)
    assert all(isinstance(o, ObjectInfo) for o in everything)
    sizes = {o.key: o.size for o in everything}
    assert sizes == {k: i for i, k in enumerate(keys)}
    assert all(o.mtime > 1.6e9 for o in everything)
    assert sorted(o.key for o in store.list("a/")) == ["a/b.txt", "a/b/c.txt", "a/bc/d.txt"]
    assert sorted(o.key for o in store.list("a/b")) == ["a/b.txt", "a/b/c.txt", "a/bc/d.txt"]
    assert sorted(o.key for o in store.list("a")) == ["a-c", "a/b.txt", "a/b/c.txt", "a/bc/d.txt", "ab"]
    assert [o.key for o in store.list("z/2/")] == ["z/2/3/4"]
    assert list(store.list("nothing/")) == []
    if isinstance(store, S3Store):
        assert all(o.etag for o in everything)
        assert next(o for o in everything if o.key == "ab").etag == hashlib.md5(b"x" * 4).hexdigest()


def test_delete_prefix(store: Store) -> None:
    for key in ["v/1/a", "v/1/b/c", "v/10/a", "v/2/a"]:
        store.write_bytes(key, b"1")
    assert store.delete_prefix("v/1/") == 2
    assert sorted(o.key for o in store.list()) == ["v/10/a", "v/2/a"]
    assert store.delete_prefix("v/3/") == 0
    with pytest.raises(ValueError):
        store.delete_prefix("")


@pytest.mark.parametrize("key", ["", "/abs", "../x", "a/../b", "a//b", "./a", "a\\b"])
def test_bad_keys(store: Store, key: str) -> None:
    with pytest.raises(ValueError):
        store.read_bytes(key)
    with pytest.raises(ValueError):
        store.write_bytes(key, b"")


def test_uri_for_and_local_path(tmp_path: Path) -> None:
    local = open_store(tmp_path)
    assert local.uri_for("a/b") == str(tmp_path / "a" / "b")
    assert local.local_path("a/b") == tmp_path / "a" / "b"
    s3 = open_store("s3://bkt/pre/fix/")
    assert s3.uri_for("a/b") == "s3://bkt/pre/fix/a/b"
    assert s3.local_path("a/b") is None
    assert open_store("s3://bkt").uri_for("k") == "s3://bkt/k"


def test_uri_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = open_store("rel/dir")
    assert isinstance(rel, LocalStore) and rel.root == tmp_path / "rel" / "dir"
    spaced = tmp_path / "a b"
    assert open_store(f"file://{tmp_path}/a%20b").root == spaced
    assert open_store(f"file://localhost{tmp_path}").root == tmp_path
    assert open_store(tmp_path).root == tmp_path
    s3 = open_store("s3://my-bucket/idx/v1")
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix) == ("my-bucket", "idx/v1")


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "   ",
        "s3://",
        "s3:///prefix",
        "s3://Bad_Bucket/x",
        "s3://ab/x",
        "s3://bkt/a/../b",
        "s3:/bkt/x",
        "gs://bkt/x",
        "http://host/x",
        "file://otherhost/x",
        "file:relative",
        "s3://bkt/x?versionId=1",
    ],
)
def test_bad_uris(uri: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(uri)
    assert repr(uri) in str(info.value)


def test_local_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path)
    store.write_bytes("f.json", b"old")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StorageError, match="disk on fire"):
        store.write_bytes("f.json", b"new content")
    monkeypatch.undo()
    assert store.read_bytes("f.json") == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_local_listing_hides_temp_files(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.write_bytes("d/x", b"1")
    (tmp_path / "d" / ".tmp-x.abc").write_bytes(b"partial")
    assert [o.key for o in store.list()] == ["d/x"]
    assert list(open_store(tmp_path / "missing-root").list()) == []


def test_local_delete_removes_empty_dirs(tmp_path: Path) -> None:
    store = open_store(tmp_path / "root")
    store.write_bytes("a/b/c", b"1")
    store.write_bytes("a/keep", b"1")
    store.delete("a/b/c")
    assert not (tmp_path / "root" / "a" / "b").exists()
    assert (tmp_path / "root" / "a" / "keep").exists()
    store.delete_prefix("a/")
    assert (tmp_path / "root").is_dir() and not any((tmp_path / "root").iterdir())


def test_file_digest(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1000)
    assert file_digest(path) == (hashlib.sha256(b"abc" * 1000).hexdigest(), 3000)


def test_fetch_dir_local_is_not_copied(tmp_path: Path) -> None:
    store = open_store(tmp_path / "src")
    store.write_bytes("k/a", b"1")
    cache = tmp_path / "cache"
    assert fetch_dir(str(tmp_path / "src"), cache, ["k/a"]) == tmp_path / "src"
    assert not cache.exists()


def test_default_region_and_lazy_boto3(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import handler.core.storage as s, handler.core.index\n"
        "st = s.open_store(sys.argv[1]); st.write_bytes('a', b'1'); list(st.list()); st.read_bytes('a')\n"
        "bad = [m for m in ('boto3', 'botocore', 'torch', 'torchvision', 'open_clip') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "s3 = s.open_store('s3://bucket/x')\n"
        "assert 'boto3' not in sys.modules\n"
        "print(s3.client.meta.region_name)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "us-east-1"


@pytest.mark.s3
def test_s3_pagination(s3_server, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(f"s3://{s3_server.make_bucket()}/p")
    keys = [f"k/{i:03d}" for i in range(7)]
    for key in keys:
        store.write_bytes(key, key.encode())
    store.write_bytes("other", b"-")
    calls: list[int] = []
    store.client.meta.events.register("after-call.s3.ListObjectsV2", lambda **kw: calls.append(1))
    assert sorted(o.key for o in store.list("k/", page_size=2)) == keys
    assert len(calls) == 4
    calls.clear()
    assert store.delete_prefix("k/", page_size=3) == 7
    assert len(calls) == 3
    assert [o.key for o in store.list()] == ["other"]


@pytest.mark.s3
def test_s3_prefix_isolation(s3_server) -> None:
    bucket = s3_server.make_bucket()
    open_store(f"s3://{bucket}/idx").write_bytes("a", b"1")
    open_store(f"s3://{bucket}/idx2").write_bytes("a", b"2")
    open_store(f"s3://{bucket}").write_bytes("top", b"3")
    assert [o.key for o in open_store(f"s3://{bucket}/idx").list()] == ["a"]
    assert sorted(o.key for o in open_store(f"s3://{bucket}").list()) == ["idx/a", "idx2/a", "top"]
    assert open_store(f"s3://{bucket}/idx").delete_prefix("a") == 1
    assert open_store(f"s3://{bucket}/idx2").read_bytes("a") == b"2"


@pytest.mark.s3
def test_s3_missing_bucket(s3_server) -> None:
    store = open_store("s3://no-such-bucket-here/x")
    with pytest.raises(NotFoundError, match="no-such-bucket-here"):
        store.read_bytes("k")
    assert not store.exists("k")


@pytest.mark.s3
def test_s3_multipart_upload(s3_server, tmp_path: Path) -> None:
    store = open_store(f"s3://{s3_server.make_bucket()}")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(9 << 20))  # over boto3's 8 MiB multipart threshold
    store.upload_file("big.bin", src)
    assert next(iter(store.list())).size == 9 << 20
    store.download_file("big.bin", tmp_path / "back.bin")
    assert file_digest(tmp_path / "back.bin") == file_digest(src)


@pytest.mark.s3
def test_s3_fetch_dir(s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(f"s3://{s3_server.make_bucket()}/remote")
    store.write_bytes("v/a.bin", b"aaaa")
    store.write_bytes("v/b.bin", b"bb")
    expected = {
        k: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
        for k, d in (("v/a.bin", b"aaaa"), ("v/b.bin", b"bb"))
    }
    cache = tmp_path / "cache"
    root = fetch_dir(store.uri, cache, ["v/a.bin", "v/b.bin"], expected=expected)
    assert root == cache and (cache / "v/a.bin").read_bytes() == b"aaaa"

    downloads: list[str] = []
    real = S3Store.read_range

    def counting(self: S3Store, key: str, start: int, end: int) -> tuple[bytes, int]:
        downloads.append(key)  # objects this small are one ranged GET each
        return real(self, key, start, end)

    monkeypatch.setattr(S3Store, "read_range", counting)
    fetch_dir(store, cache, ["v/a.bin", "v/b.bin"], expected=expected)
    assert downloads == []  # both cached and valid
    (cache / "v/a.bin").write_bytes(b"AAAA")  # same size, wrong content
    fetch_dir(store, cache, ["v/a.bin", "v/b.bin"], expected=expected)
    assert downloads == ["v/a.bin"] and (cache / "v/a.bin").read_bytes() == b"aaaa"
    fetch_dir(store, cache, ["v/b.bin"])  # no checksum: always downloaded
    assert downloads == ["v/a.bin", "v/b.bin"]

    store.write_bytes("v/a.bin", b"evil")  # remote no longer matches what the caller expects
    (cache / "v/a.bin").unlink()
    with pytest.raises(ArtifactError, match=r"v/a\.bin"):
        fetch_dir(store, cache, ["v/a.bin"], expected=expected)
    assert not (cache / "v/a.bin").exists()


@pytest.mark.s3
def test_s3_server_restart_keeps_data(s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    src = tmp_path / "src"
    src.write_bytes(b"data")
    store = open_store(f"s3://{s3_server.make_bucket()}/persist")
    store.write_bytes("k", b"v")
    s3_server.stop()
    try:
        down = open_store(store.uri)
        with pytest.raises(StorageError):
            down.read_bytes("k")
        with pytest.raises(StorageError):
            down.upload_file("up", src)
        with pytest.raises(StorageError):
            down.download_file("k", tmp_path / "k")
        with pytest.raises(StorageError):
            list(down.list())
    finally:
        s3_server.start()
    assert open_store(store.uri).read_bytes("k") == b"v"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_local_writes_get_the_umask_mode_not_0600(tmp_path: Path, umask: int) -> None:
    """Issue 11 #17: mkstemp's 0600 made a local index unreadable for a service running as another user."""
    old = os.umask(umask)
    try:
        store = open_store(tmp_path / "store")
        store.write_bytes("versions/v/manifest.json", b"{}")
        (tmp_path / "f").write_bytes(b"abc")
        store.upload_file("versions/v/index.hnsw", tmp_path / "f")
        open_store(tmp_path / "store").download_file("versions/v/index.hnsw", tmp_path / "copy")
    finally:
        os.umask(old)
    for path in (
        tmp_path / "store/versions/v/manifest.json",
        tmp_path / "store/versions/v/index.hnsw",
        tmp_path / "copy",
    ):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_read_bytes_max_bytes(store: Store) -> None:
    from handler.core.storage import TooLargeError

    store.write_bytes("a.bin", b"x" * 5000)
    store.write_bytes("empty.bin", b"")
    assert store.read_bytes("a.bin", max_bytes=5000) == b"x" * 5000
    assert store.read_bytes("empty.bin", max_bytes=10) == b""
    with pytest.raises(TooLargeError, match="larger than the limit of 4999 bytes"):
        store.read_bytes("a.bin", max_bytes=4999)
    with pytest.raises(NotFoundError):
        store.read_bytes("missing.bin", max_bytes=10)


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    """Issue 11 #17: a writer killed mid-write leaves .tmp-* files that listing hides and pruning
    never saw."""
    root = tmp_path / "index"
    store = open_store(root)
    store.write_bytes("versions/v1/manifest.json", b"{}")
    old = [
        root / ".tmp-CURRENT.abc",
        root / "versions/v1/.tmp-index.hnsw.x",
        root / "versions/v2/.tmp-items.y",
    ]
    fresh = root / "versions/v3/.tmp-index.hnsw.z"  # a build writing right now
    work = root / ".work/shards-k/.tmp-000001.npz.q"  # a build's own work dir: not the store's business
    for path in [*old, fresh, work]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    for path in [*old, work]:
        os.utime(path, (1_000_000_000, 1_000_000_000))
    assert isinstance(store, LocalStore) and store.remove_stale_temp() == 3
    assert not any(p.exists() for p in old) and fresh.exists() and work.exists()
    assert not (root / "versions/v2").exists()  # emptied directories go too
    # deleting a prefix deletes the temp files under it, whatever their age, and the directory
    store.delete_prefix("versions/v3/")
    assert not (root / "versions/v3").exists()
    assert [o.key for o in store.list()] == ["versions/v1/manifest.json"]
