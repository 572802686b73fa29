"""handler.core.storage.verified: a file verified once is trusted unhashed while unchanged, never after."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from handler.core import hashing
from handler.core.storage import verified
from handler.core.storage.verified import VerifiedRecords, verify_file

DATA = b"0123456789" * 1000
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files handler.core.hashing.file_digest read, in order."""
    calls: list[Path] = []
    real = hashing.file_digest

    def counting(path: str | Path) -> tuple[str, int]:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(hashing, "file_digest", counting)
    return calls


@pytest.fixture
def not_racy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records count as made long after the file's last change (else a fresh file's record is racy)."""
    monkeypatch.setattr(verified, "RACY_NS", 0)


def _changed_ctime(path: Path, before: int) -> None:
    """Precondition of the ctime tests: the file's ctime moved on (multigrain timestamps guarantee it on
    Linux >= 6.13; older kernels may need a timestamp tick)."""
    while os.stat(path).st_ctime_ns == before:
        os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns))


def test_second_check_does_not_hash(tmp_path: Path, hashed: list[Path], not_racy: None) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    records = VerifiedRecords(tmp_path / "records")
    assert verify_file(path, size=len(DATA), sha256=SHA, records=records) is None
    assert verify_file(path, size=len(DATA), sha256=SHA, records=records) is None
    assert (
        verify_file(path, size=len(DATA), sha256=SHA, records=VerifiedRecords(tmp_path / "records")) is None
    )
    assert hashed == [path]
    assert verify_file(path, sha256="0" * 64, records=records) is not None  # another digest: hashed
    assert len(hashed) == 2
    assert verify_file(path, size=len(DATA), sha256=SHA) is None  # no records: always hashed
    assert len(hashed) == 3


def test_racy_record_is_not_trusted(tmp_path: Path, hashed: list[Path]) -> None:
    """A record made within RACY_NS of the file's last change could miss a write in the same timestamp
    tick: the next check hashes (and records again)."""
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    records = VerifiedRecords(tmp_path / "records")
    for _ in range(2):
        assert verify_file(path, size=len(DATA), sha256=SHA, records=records) is None
    assert hashed == [path, path]


def test_modified_file_is_hashed_and_refused(tmp_path: Path, hashed: list[Path], not_racy: None) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    records = VerifiedRecords(tmp_path / "records")
    assert verify_file(path, size=len(DATA), sha256=SHA, records=records) is None
    st = os.stat(path)
    path.write_bytes(DATA.replace(b"5", b"X"))  # same size, new content, new mtime
    _changed_ctime(path, st.st_ctime_ns)
    problem = verify_file(path, size=len(DATA), sha256=SHA, records=records)
    assert problem is not None and "sha256" in problem
    assert len(hashed) == 2
    # refused again: the failed check dropped the record
    assert verify_file(path, size=len(DATA), sha256=SHA, records=records) is not None


def test_mtime_forced_back_is_caught_by_ctime(tmp_path: Path, hashed: list[Path], not_racy: None) -> None:
    """Content changed and mtime put back with os.utime: ctime (which no caller can set) gives it away."""
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    records = VerifiedRecords(tmp_path / "records")
    assert verify_file(path, size=len(DATA), sha256=SHA, records=records) is None
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.write(b"X")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    _changed_ctime(path, st.st_ctime_ns)
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert verify_file(path, size=len(DATA), sha256=SHA, records=records) is not None
    assert len(hashed) == 2


def test_replaced_file_is_hashed_again(tmp_path: Path, hashed: list[Path], not_racy: None) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    records = VerifiedRecords(tmp_path / "records")
    assert verify_file(path, size=len(DATA), sha256=SHA, records=records) is None
    other = tmp_path / "g.bin"
    other.write_bytes(DATA)
    os.replace(other, path)  # same content, new inode
    assert verify_file(path, size=len(DATA), sha256=SHA, records=records) is None
    assert len(hashed) == 2
    assert verify_file(path, size=len(DATA), sha256=SHA, records=records) is None
    assert len(hashed) == 2  # recorded again


def test_size_mismatch_is_refused_without_hashing(tmp_path: Path, hashed: list[Path]) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(DATA[:-1])
    assert verify_file(path, size=len(DATA), sha256=SHA) == f"size {len(DATA) - 1} != expected {len(DATA)}"
    assert hashed == []
    with pytest.raises(FileNotFoundError):
        verify_file(tmp_path / "missing", size=1, sha256=SHA)


def test_unwritable_record_dir_still_verifies(tmp_path: Path, hashed: list[Path], not_racy: None) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    blocker = tmp_path / "records"
    blocker.write_text("a file where the record directory should be")
    records = VerifiedRecords(blocker)
    for _ in range(2):
        assert verify_file(path, size=len(DATA), sha256=SHA, records=records) is None
    assert len(hashed) == 2
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / records._record_path(path).name).write_text("{not json")
    assert verify_file(path, sha256=SHA, records=VerifiedRecords(tmp_path / "bad")) is None


def test_record_is_written_without_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record is an optimisation: its fsyncs were on the cold load's path; losing one costs a hash."""
    import handler.core.storage.local as local_module

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(local_module.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    path = tmp_path / "f"
    path.write_bytes(b"x")
    records = VerifiedRecords(tmp_path / "rec")
    records.record(path, "ab" * 32)
    assert synced == [] and len(list((tmp_path / "rec").iterdir())) == 1
    local_module.atomic_write(tmp_path / "durable", lambda f: f.write(b"y"))  # the default still syncs
    assert len(synced) == 2
