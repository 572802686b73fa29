"""handler.core.storage.fetch against a real S3 server (SeaweedFS): files ready one by one, missing
objects, cancel, cached files trusted from their records."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from handler.core import hashing
from handler.core.storage import NotFoundError, S3Store, VerifiedRecords, fetch_files
from handler.core.storage import verified as verified_module
from tests.handler.core.storage.conftest import PART, leftovers, put

pytestmark = pytest.mark.s3


def test_missing_object(store: S3Store, tmp_path: Path) -> None:
    ok = put(store, "a", b"aaa")
    job = fetch_files(store, ["nope", "a"], tmp_path, expected={"nope": {"size": 3}, "a": ok})
    with pytest.raises(NotFoundError, match="nope"):
        job.futures["nope"].result()
    assert job.futures["a"].result() == tmp_path / "a"
    job.join()
    job = fetch_files(store, ["nope2"], tmp_path)  # no expected size: HEAD says it is missing
    with pytest.raises(FileNotFoundError):
        job.wait()
    assert leftovers(tmp_path) == ["a"]


def test_files_are_ready_in_order_one_by_one(store: S3Store, tmp_path: Path) -> None:
    expected = {f"s/{i}": put(store, f"s/{i}", os.urandom(PART * (3 - i) + i)) for i in range(3)}
    order: list[str] = []
    with fetch_files(store, expected, tmp_path, expected=expected, part_size=PART, workers=1) as job:
        for key, fut in job.futures.items():
            fut.add_done_callback(lambda f, key=key: order.append(key))
        job.wait()
    assert order == ["s/0", "s/1", "s/2"]  # parts are taken in key order


def test_first_file_is_usable_while_the_next_downloads(
    store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = {k: put(store, k, os.urandom(2 * PART)) for k in ("a", "b")}
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
    expected = {"big": put(store, "big", os.urandom(4 * PART))}
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


def test_cached_file_is_trusted_from_its_record(
    store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verified_module, "RACY_NS", 0)
    expected = {"c": put(store, "c", os.urandom(PART + 3))}
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


def test_workers_start_together(store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No GET before every worker is started (a busy worker used to slow the start of the next ones)."""
    expected = {"w": put(store, "w", os.urandom(8 * PART))}
    seen: list[int] = []
    real_get, real_start = S3Store.read_range, threading.Thread.start

    def get(self: S3Store, key: str, start: int, end: int) -> tuple[bytes, int]:
        seen.append(sum(t.name == "fetch" for t in threading.enumerate()))
        return real_get(self, key, start, end)

    def slow_start(self: threading.Thread) -> None:
        real_start(self)
        time.sleep(0.05)  # a loaded machine: the starting thread gets the core back late

    monkeypatch.setattr(S3Store, "read_range", get)
    monkeypatch.setattr(threading.Thread, "start", slow_start)
    fetch_files(store, expected, tmp_path, expected=expected, part_size=PART, workers=4).wait(30)
    assert seen and seen[0] >= 4


def test_a_failed_worker_start_releases_the_started_ones(
    store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the process cannot start another thread, the error reaches the caller and the workers already
    started still run (they wait for all to start: they must not wait forever)."""
    expected = {"f": put(store, "f", os.urandom(8 * PART))}
    real_start = threading.Thread.start
    started: list[threading.Thread] = []

    def start(self: threading.Thread) -> None:
        if self.name == "fetch" and started:
            raise RuntimeError("can't start new thread")
        real_start(self)
        if self.name == "fetch":
            started.append(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        fetch_files(store, expected, tmp_path, expected=expected, part_size=PART, workers=4)
    assert len(started) == 1
    started[0].join(30)
    assert not started[0].is_alive()
