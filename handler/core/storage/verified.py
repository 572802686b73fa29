"""Records of local files verified against a sha256, so a later start trusts an unchanged file unhashed.

A record (one small JSON file per verified file, in a record directory, never next to the file: an index
directory may be read-only or be a store) holds the file's size, mtime_ns, ctime_ns, inode and device at
the moment its content was hashed (or written from a stream that was hashed) and found equal to a wanted
digest. A later check trusts the file without reading it when all of these are unchanged and the wanted
digest is the recorded one; anything else is hashed again (and refused if it differs).

What a record catches: any write, truncation, ``os.utime`` (it sets ctime to now), chmod, rename over
the file or copy to another place (new inode, new ctime). What it cannot catch: changes that bypass the
file system's timestamps (disk corruption, bit rot, raw block-device writes, a clock set back). A write in
the same timestamp tick as the file's last change before recording keeps ctime equal, so a record made
within ``RACY_NS`` of that change is "racy" and not trusted: the next check hashes once and records again
(as git does for racily clean index entries). Hence a file just downloaded is trusted from the third start
on; a file written long before its first check (a built index) from the second.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from handler.core import hashing
from handler.core.storage.local import atomic_write

__all__ = ["RACY_NS", "RECORDS_DIR", "VerifiedRecords", "verify_file"]

RACY_NS = 2_000_000_000  # > the coarsest timestamp granularity in use (FAT: 2 s; Linux fs: a jiffy)
RECORDS_DIR = ".verified"  # conventional name of a record directory inside a cache directory
_STAMP = ("size", "mtime_ns", "ctime_ns", "ino", "dev")


def _stamp(st: os.stat_result) -> dict[str, int]:
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "ino": st.st_ino,
        "dev": st.st_dev,
    }


class VerifiedRecords:
    """The records of one directory (created on first record). Records are an optimisation: one that
    cannot be read or written is ignored (the file is hashed)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory).expanduser().absolute()

    def _record_path(self, path: Path) -> Path:
        name = hashlib.sha256(os.fsencode(Path(path).absolute())).hexdigest()[:32]
        return self.directory / f"{name}.json"

    def trusted(self, path: str | Path, sha256: str, st: os.stat_result | None = None) -> bool:
        """True when ``path`` was recorded with digest ``sha256``, is unchanged since, and the record is
        not racy. ``st``: the file's stat, if the caller has it."""
        try:
            record: Any = json.loads(self._record_path(Path(path)).read_bytes())
            st = os.stat(path) if st is None else st
        except (OSError, ValueError):
            return False
        if not isinstance(record, dict) or record.get("sha256") != sha256:
            return False
        if record.get("path") != str(Path(path).absolute()):
            return False  # a hash-prefix collision of two paths
        stamp = _stamp(st)
        if any(record.get(k) != stamp[k] for k in _STAMP):
            return False
        recorded_at = record.get("recorded_at_ns")
        changed = max(stamp["mtime_ns"], stamp["ctime_ns"])
        return isinstance(recorded_at, int) and changed < recorded_at - RACY_NS

    def record(self, path: str | Path, sha256: str, st: os.stat_result | None = None) -> None:
        """Record that ``path`` (in the state ``st``, by default now) has content digest ``sha256``. Pass
        the stat taken *before* the content was read: a change while hashing then fails the next check."""
        try:
            st = os.stat(path) if st is None else st
            body = {
                "path": str(Path(path).absolute()),
                "sha256": sha256,
                **_stamp(st),
                "recorded_at_ns": time.time_ns(),
            }
            data = json.dumps(body, sort_keys=True).encode()
            # not fsynced: a record a crash loses or empties is unreadable and ignored (the file is hashed
            # again); two fsyncs per downloaded file were on the cold load's path (0.1-0.3 s on a busy disk)
            atomic_write(self._record_path(Path(path)), lambda f: f.write(data), durable=False)
        except OSError:
            return  # read-only or full cache: the file is hashed next time

    def forget(self, path: str | Path) -> None:
        with contextlib.suppress(OSError):
            self._record_path(Path(path)).unlink()


def verify_file(
    path: str | Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    records: VerifiedRecords | None = None,
) -> str | None:
    """None when the local file has ``size`` bytes and content ``sha256`` (each checked when given),
    trusting an unchanged file from ``records`` and recording one it hashed; otherwise a description of
    the mismatch. A missing file raises :class:`FileNotFoundError`."""
    st = os.stat(path)
    if size is not None and st.st_size != int(size):
        return f"size {st.st_size} != expected {size}"
    if not sha256:
        return None
    if records is not None and records.trusted(path, sha256, st):
        return None
    digest, _ = hashing.file_digest(path)  # looked up at call time: tests count the calls
    if digest != sha256:
        if records is not None:
            records.forget(path)
        return f"sha256 {digest} != expected {sha256}"
    if records is not None:
        records.record(path, sha256, st)
    return None
