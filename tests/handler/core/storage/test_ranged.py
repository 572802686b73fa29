"""handler.core.storage.ranged against a real S3 server (SeaweedFS): concurrent ranged GETs equal the
object, sha256 computed while streaming, corrupt objects refused leaving no file, the window bound."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from handler.core import hashing
from handler.core.errors import ArtifactError
from handler.core.storage import S3Store, VerifiedRecords, fetch_files
from tests.handler.core.storage.conftest import PART, leftovers, put

pytestmark = pytest.mark.s3


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 5 * PART + 12345])
@pytest.mark.parametrize("hash_from", ["memory", "file"])
def test_ranged_download_equals_the_object(store: S3Store, tmp_path: Path, size: int, hash_from: str) -> None:
    data = os.urandom(size)
    expected = {"k/obj.bin": put(store, "k/obj.bin", data)}
    with fetch_files(
        store, expected, tmp_path, expected=expected, part_size=PART, workers=4, hash_from=hash_from
    ) as job:
        paths = job.wait()
    assert paths == {"k/obj.bin": tmp_path / "k/obj.bin"}
    assert paths["k/obj.bin"].read_bytes() == data  # and its streamed sha256 equalled hashlib's
    assert leftovers(tmp_path) == ["obj.bin"]


def test_streaming_hash_is_the_files_sha256(store: S3Store, tmp_path: Path) -> None:
    """Without an expected digest the file is still hashed while streaming; the record written with a
    digest is hashlib's digest of the file."""
    data = os.urandom(3 * PART + 7)
    want = put(store, "a.bin", data)
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
    assert leftovers(tmp_path) == []

    store.write_bytes("v/x.bin", data + b"more")  # larger than expected: Content-Range says so
    job = fetch_files(store, ["v/x.bin"], tmp_path, expected={"v/x.bin": want}, part_size=PART)
    with pytest.raises(ArtifactError, match=r"v/x\.bin: size"):
        job.wait()
    job.join()
    assert leftovers(tmp_path) == []


def test_window_bounds_parts_waiting_for_the_hash(
    store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Part 0 held back: no more than ``window`` parts are fetched ahead of the hashed prefix."""
    expected = {"w": put(store, "w", os.urandom(12 * PART))}
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


def test_file_is_ready_before_its_record_is_written(
    store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The verified-file record (two fsyncs) is not on the loader's path: the future resolves first."""
    expected = {"r": put(store, "r", os.urandom(2 * PART + 1))}
    recording, release = threading.Event(), threading.Event()
    real = VerifiedRecords.record

    def slow_record(self: VerifiedRecords, *a: object, **k: object) -> None:
        recording.set()
        assert release.wait(30)
        real(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(VerifiedRecords, "record", slow_record)
    records = VerifiedRecords(tmp_path / "rec")
    job = fetch_files(store, expected, tmp_path / "c", expected=expected, records=records, part_size=PART)
    assert job.futures["r"].result(30).stat().st_size == 2 * PART + 1
    assert recording.wait(30) and not release.is_set()  # ready while the record is still being written
    release.set()
    job.wait(30)  # returns once the records are written
    assert list((tmp_path / "rec").iterdir())
