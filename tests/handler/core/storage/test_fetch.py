"""handler.core.storage.fetch: concurrent ranged downloads from a real S3 server (SeaweedFS), sha256 while
streaming, files ready one by one, corrupt objects refused, cached files trusted from their records."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from handler.core import hashing
from handler.core.errors import ArtifactError
from handler.core.storage import NotFoundError, S3Store, VerifiedRecords, fetch_files, open_store
from handler.core.storage import verified as verified_module

pytestmark = pytest.mark.s3
PART = 64 << 10


@pytest.fixture
def store(s3_server) -> S3Store:
    st = open_store(f"s3://{s3_server.make_bucket()}/remote")
    assert isinstance(st, S3Store)
    return st


def _put(store: S3Store, key: str, data: bytes) -> dict[str, object]:
    store.write_bytes(key, data)
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file() and ".verified" not in p.parts)


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 5 * PART + 12345])
@pytest.mark.parametrize("hash_from", ["memory", "file"])
def test_ranged_download_equals_the_object(store: S3Store, tmp_path: Path, size: int, hash_from: str) -> None:
    data = os.urandom(size)
    expected = {"k/obj.bin": _put(store, "k/obj.bin", data)}
    with fetch_files(
        store, expected, tmp_path, expected=expected, part_size=PART, workers=4, hash_from=hash_from
    ) as job:
        paths = job.wait()
    assert paths == {"k/obj.bin": tmp_path / "k/obj.bin"}
    assert paths["k/obj.bin"].read_bytes() == data  # and its streamed sha256 equalled hashlib's
    assert _leftovers(tmp_path) == ["obj.bin"]


def test_streaming_hash_is_the_files_sha256(store: S3Store, tmp_path: Path) -> None:
    """Without an expected digest the file is still hashed while streaming; the record written with a
    digest is hashlib's digest of the file."""
    data = os.urandom(3 * PART + 7)
    want = _put(store, "a.bin", data)
    records = VerifiedRecords(tmp_path / "rec")
    with fetch_files(store, ["a.bin"], tmp_path / "c", expected={"a.bin": want}, records=records) as job:
        path = job.wait()["a.bin"]
    assert hashing.file_digest(path) == (want["sha256"], len(data))
    record = (tmp_path / "rec").glob("*.json").__next__().read_text()
    assert str(want["sha256"]) in record


@pytest.mark.parametrize("hash_from", ["memory", "file"])
def test_corrupt_object_is_refused_and_leaves_no_file(store: S3Store, tmp_path: Path, hash_from: str) -> None:
    data = os.urandom(3 * PART + 1)
    want = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    store.write_bytes("v/x.bin", data[:-1] + bytes([data[-1] ^ 1]))  # same size, other bytes
    job = fetch_files(
        store, ["v/x.bin"], tmp_path, expected={"v/x.bin": want}, part_size=PART, hash_from=hash_from
    )
    with pytest.raises(ArtifactError, match=r"v/x\.bin: sha256 .* != expected"):
        job.wait()
    job.join()
    assert _leftovers(tmp_path) == []

    store.write_bytes("v/x.bin", data + b"more")  # larger than expected: Content-Range says so
    job = fetch_files(store, ["v/x.bin"], tmp_path, expected={"v/x.bin": want}, part_size=PART)
    with pytest.raises(ArtifactError, match=r"v/x\.bin: size"):
        job.wait()
    job.join()
    assert _leftovers(tmp_path) == []


def test_missing_object(store: S3Store, tmp_path: Path) -> None:
    ok = _put(store, "a", b"aaa")
    job = fetch_files(store, ["nope", "a"], tmp_path, expected={"nope": {"size": 3}, "a": ok})
    with pytest.raises(NotFoundError, match="nope"):
        job.futures["nope"].result()
    assert job.futures["a"].result() == tmp_path / "a"
    job.join()
    job = fetch_files(store, ["nope2"], tmp_path)  # no expected size: HEAD says it is missing
    with pytest.raises(FileNotFoundError):
        job.wait()
    assert _leftovers(tmp_path) == ["a"]


def test_files_are_ready_in_order_one_by_one(store: S3Store, tmp_path: Path) -> None:
    expected = {f"s/{i}": _put(store, f"s/{i}", os.urandom(PART * (3 - i) + i)) for i in range(3)}
    order: list[str] = []
    with fetch_files(store, expected, tmp_path, expected=expected, part_size=PART, workers=1) as job:
        for key, fut in job.futures.items():
            fut.add_done_callback(lambda f, key=key: order.append(key))
        job.wait()
    assert order == ["s/0", "s/1", "s/2"]  # parts are taken in key order


def test_first_file_is_usable_while_the_next_downloads(
    store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = {k: _put(store, k, os.urandom(2 * PART)) for k in ("a", "b")}
    release = threading.Event()
    real = S3Store.read_range

    def slow_b(self: S3Store, key: str, start: int, end: int) -> tuple[bytes, int]:
        if key == "b":
            assert release.wait(30)
        return real(self, key, start, end)

    monkeypatch.setattr(S3Store, "read_range", slow_b)
    with fetch_files(store, expected, tmp_path, expected=expected, part_size=PART, workers=4) as job:
        assert job.futures["a"].result(30).read_bytes() == store.read_bytes("a")
        assert not job.futures["b"].done()
        release.set()
        assert job.wait(30)["b"].stat().st_size == 2 * PART


def test_cancel_removes_temp_files(store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = {"big": _put(store, "big", os.urandom(4 * PART))}
    started, release = threading.Event(), threading.Event()
    real = S3Store.read_range

    def blocked(self: S3Store, key: str, start: int, end: int) -> tuple[bytes, int]:
        started.set()
        assert release.wait(30)
        return real(self, key, start, end)

    monkeypatch.setattr(S3Store, "read_range", blocked)
    job = fetch_files(store, expected, tmp_path, expected=expected, part_size=PART, workers=2)
    assert started.wait(30)
    job.cancel()
    release.set()
    job.join()
    assert job.futures["big"].cancelled() or job.futures["big"].exception() is not None
    assert list(tmp_path.iterdir()) == []


def test_window_bounds_parts_waiting_for_the_hash(
    store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Part 0 held back: no more than ``window`` parts are fetched ahead of the hashed prefix."""
    expected = {"w": _put(store, "w", os.urandom(12 * PART))}
    release = threading.Event()
    fetched: list[int] = []
    real = S3Store.read_range

    def first_slow(self: S3Store, key: str, start: int, end: int) -> tuple[bytes, int]:
        if start == 0:
            assert release.wait(30)
        else:
            fetched.append(start // PART)
        return real(self, key, start, end)

    monkeypatch.setattr(S3Store, "read_range", first_slow)
    with fetch_files(
        store, expected, tmp_path, expected=expected, part_size=PART, workers=3, window=4
    ) as job:
        for _ in range(3000):
            if len(fetched) >= 3:
                break
            threading.Event().wait(0.01)
        threading.Event().wait(0.2)  # time for a wrong implementation to run ahead
        assert len(fetched) == 3  # parts 1-3 hold the other window slots
        release.set()
        job.wait(30)
    assert sorted(fetched) == list(range(1, 12))


def test_cached_file_is_trusted_from_its_record(
    store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verified_module, "RACY_NS", 0)
    expected = {"c": _put(store, "c", os.urandom(PART + 3))}
    records = VerifiedRecords(tmp_path / "rec")
    fetch_files(store, expected, tmp_path / "cache", expected=expected, records=records).wait()
    gets: list[str] = []
    hashed: list[Path] = []
    real_get, real_hash = S3Store.read_range, hashing.file_digest
    monkeypatch.setattr(S3Store, "read_range", lambda s, k, *a: (gets.append(k), real_get(s, k, *a))[1])
    monkeypatch.setattr(hashing, "file_digest", lambda p: (hashed.append(Path(p)), real_hash(p))[1])
    fetch_files(store, expected, tmp_path / "cache", expected=expected, records=records).wait()
    assert (gets, hashed) == ([], [])  # second start: neither downloaded nor hashed
    path = tmp_path / "cache" / "c"
    with open(path, "r+b") as f:
        f.write(b"X")  # corrupted in place
    fetch_files(store, expected, tmp_path / "cache", expected=expected, records=records).wait()
    assert gets == ["c"] and hashed == [path]  # hashed, refused, downloaded again
    assert path.read_bytes() == store.read_bytes("c")
