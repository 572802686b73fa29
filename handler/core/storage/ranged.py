"""One S3 object downloaded by concurrent ranged GETs into a temp file, hashed in order while the parts
arrive, renamed into place once size and sha256 match (see :mod:`handler.core.storage.fetch`)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from handler.core.errors import ArtifactError
from handler.core.storage.base import TMP_PREFIX, NotFoundError, StorageError, Store
from handler.core.storage.local import _file_mode
from handler.core.storage.s3 import S3Store
from handler.core.storage.verified import VerifiedRecords

__all__ = ["RangedFile", "Transfer"]

_READ_ATTEMPTS = 3  # a part whose body read breaks (connection reset mid-stream) is fetched again


@dataclass(frozen=True)
class Transfer:
    """What the downloads of one job share: the store, the part size, the window of parts that may run
    ahead of the hashed prefix, where parts are hashed from, and the records of verified files."""

    store: Store
    part_size: int
    window: threading.Semaphore
    hash_from: str
    records: VerifiedRecords | None


class RangedFile:
    """One object being downloaded: its temp file, parts, and the in-order hash of what arrived."""

    def __init__(
        self, job: Transfer, key: str, dest: Path, size: int, sha256: str | None, future: Future[Path]
    ) -> None:
        self.job, self.key, self.dest, self.size, self.sha256 = job, key, dest, size, sha256
        self.future = future
        self.nparts = max(1, -(-size // job.part_size))
        self.lock = threading.Lock()
        self.hasher = hashlib.sha256()
        self.pending: dict[int, bytes | None] = {}
        self.next_hash = 0
        self.busy = False  # a thread is hashing (or finishing) this file
        self.inflight = 0
        self.failed = False
        self.fd = -1
        self.tmp = ""

    def open(self) -> None:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.fd, self.tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{self.dest.name}.", dir=self.dest.parent)
        try:
            os.fchmod(self.fd, _file_mode())
            try:
                if self.size:
                    os.posix_fallocate(self.fd, 0, self.size)  # early ENOSPC, no sparse holes
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # cannot preallocate here
                    raise
                os.ftruncate(self.fd, self.size)
        except OSError:
            self.failed = True
            self._discard_if_failed()
            raise

    def parts(self) -> Iterator[tuple[RangedFile, int]]:
        return ((self, i) for i in range(self.nparts))

    def span(self, i: int) -> tuple[int, int]:
        start = i * self.job.part_size
        return start, min(self.size, start + self.job.part_size)

    def fetch_part(self, i: int) -> None:
        """Download part ``i``, write it at its offset, hand it to the hash (the window slot goes with it)."""
        with self.lock:
            if self.failed or self.future.cancelled():
                self.job.window.release()
                return
            self.inflight += 1
        try:
            start, end = self.span(i)
            data = self._read(start, end)
            os.pwrite(self.fd, data, start)
        except BaseException as e:
            self._done_inflight()
            self.fail(e if isinstance(e, ArtifactError) else StorageError(f"cannot write {self.dest}: {e}"))
            self.job.window.release()
            return
        self._done_inflight()
        self._hash(i, None if self.job.hash_from == "file" else data)

    def _read(self, start: int, end: int) -> bytes:
        store = self.job.store
        assert isinstance(store, S3Store)
        for attempt in range(_READ_ATTEMPTS):
            try:
                data, total = store.read_range(self.key, start, end)
                break
            except StorageError as e:
                if isinstance(e, NotFoundError) or attempt + 1 == _READ_ATTEMPTS or not _transient(e):
                    raise
        if total != self.size:
            raise ArtifactError(f"{store.uri_for(self.key)}: size {total} != expected {self.size}")
        if len(data) != end - start:
            raise StorageError(f"cannot read {store.uri_for(self.key)}: short read at {start}")
        return data

    def _done_inflight(self) -> None:
        with self.lock:
            self.inflight -= 1
        self._discard_if_failed()

    def _hash(self, i: int, data: bytes | None) -> None:
        with self.lock:
            if self.failed:
                self.job.window.release()
                return
            self.pending[i] = data
            if self.busy:
                return  # the thread hashing this file will reach part i
            self.busy = True
        complete = False
        while not complete:
            with self.lock:
                if self.failed or self.next_hash not in self.pending:
                    self.busy = complete = not self.failed and self.next_hash == self.nparts
                    break
                n = self.next_hash
                block = self.pending.pop(n)
                self.next_hash += 1
            try:
                if block is None:
                    start, end = self.span(n)
                    block = os.pread(self.fd, end - start, start)
                self.hasher.update(block)  # releases the GIL: downloads go on meanwhile
            except OSError as e:
                self.fail(StorageError(f"cannot read back {self.tmp}: {e}"))
            finally:
                self.job.window.release()
        if complete:
            self._finish()  # still busy: a concurrent fail() leaves the temp file to it
        self._discard_if_failed()

    def _finish(self) -> None:
        digest = self.hasher.hexdigest()
        try:
            if self.sha256 is not None and digest != self.sha256:
                uri = self.job.store.uri_for(self.key)
                self.fail(ArtifactError(f"{uri}: sha256 {digest} != expected {self.sha256}"))
                return
            try:
                os.close(self.fd)
                self.fd = -1
                os.replace(self.tmp, self.dest)
                self.tmp = ""
                st = os.stat(self.dest)  # the recorded state: taken before the loader may open the file
            except OSError as e:
                self.fail(StorageError(f"cannot write {self.dest}: {e}"))
                return
            with contextlib.suppress(Exception):  # InvalidStateError: failed or cancelled meanwhile
                self.future.set_result(self.dest)
            if self.sha256 is not None and self.job.records is not None:  # its fsyncs off the loader's path
                self.job.records.record(self.dest, digest, st)
        finally:
            with self.lock:
                self.busy = False

    def fail(self, error: BaseException) -> None:
        with self.lock:
            if self.failed:
                return
            self.failed = True
            for _ in self.pending:
                self.job.window.release()
            self.pending.clear()
        with contextlib.suppress(Exception):
            self.future.set_exception(error)
        self._discard_if_failed()

    def _discard_if_failed(self) -> None:
        """Close and delete the temp file of a failed download once no thread uses it."""
        with self.lock:
            if not self.failed or self.inflight or self.busy:
                return
            fd, tmp, self.fd, self.tmp = self.fd, self.tmp, -1, ""
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _transient(e: StorageError) -> bool:
    """A failure worth another GET: a broken body stream or connection (botocore already retried the
    request itself), not an S3 error response such as AccessDenied."""
    from botocore.exceptions import BotoCoreError

    return isinstance(e.__cause__, BotoCoreError)
