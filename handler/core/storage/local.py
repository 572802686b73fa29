"""A local directory as a :class:`Store`: atomic writes (temp file + rename + fsync), stale temp cleanup."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from handler.core.storage.base import (
    _CHUNK,
    STALE_TMP_SECONDS,
    TMP_PREFIX,
    NotFoundError,
    ObjectInfo,
    StorageError,
    Store,
    _check_key,
    _check_prefix,
    read_capped,
)


class LocalStore(Store):
    """A directory. It need not exist yet: writes create it, reads of a missing root find nothing."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def uri_for(self, key: str) -> str:
        _check_prefix(key)
        return str(self.root / key) + ("/" if key.endswith("/") else "") if key else self.uri

    def read_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                return read_capped(f, max_bytes, str(path))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
            raise NotFoundError(f"no such object: {path}", str(path)) from e
        except OSError as e:
            raise StorageError(f"cannot read {path}: {e}") from e

    def _atomic_write(self, path: Path, writer: Any) -> None:
        try:
            atomic_write(path, writer, tmp_prefix=TMP_PREFIX)
        except OSError as e:
            raise StorageError(f"cannot write {path}: {e}") from e

    def write_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(self._path(key), lambda f: f.write(data))

    def upload_file(self, key: str, local_path: str | Path) -> None:
        src = Path(local_path)
        try:
            fsrc = open(src, "rb")  # noqa: SIM115  (closed by the `with fsrc` below)
        except FileNotFoundError as e:
            raise NotFoundError(f"no such file: {src}", str(src)) from e
        with fsrc:
            self._atomic_write(self._path(key), lambda f: shutil.copyfileobj(fsrc, f, _CHUNK))

    def download_file(self, key: str, local_path: str | Path) -> None:
        src = self._path(key)
        try:
            fsrc = open(src, "rb")  # noqa: SIM115  (closed by the `with fsrc` below)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
            raise NotFoundError(f"no such object: {src}", str(src)) from e
        with fsrc:
            LocalStore(Path(local_path).parent)._atomic_write(
                Path(local_path).absolute(), lambda f: shutil.copyfileobj(fsrc, f, _CHUNK)
            )

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[ObjectInfo]:
        _check_prefix(prefix)
        # Walk from the deepest directory the prefix names, filter by the string prefix.
        base_rel = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        start = self.root / base_rel if base_rel else self.root
        yield from (o for o in self._walk(start, base_rel) if o.key.startswith(prefix))

    def _walk(self, directory: Path, rel: str, tmp: bool = False) -> Iterator[ObjectInfo]:
        """Objects under ``directory``; ``tmp``: also the temp files of atomic writes (for deleting)."""
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            raise StorageError(f"cannot list {directory}: {e}") from e
        # Sorting directories as "name/" gives the same order as sorting the full keys (S3 order).
        decorated = []
        for entry in entries:
            if entry.name.startswith(TMP_PREFIX) and not tmp:
                continue
            is_dir = entry.is_dir(follow_symlinks=True)
            decorated.append((entry.name + "/" if is_dir else entry.name, entry, is_dir))
        decorated.sort(key=lambda t: t[0])
        for _, entry, is_dir in decorated:
            if is_dir:
                yield from self._walk(Path(entry.path), f"{rel}{entry.name}/", tmp)
            elif entry.is_file(follow_symlinks=True):
                st = entry.stat(follow_symlinks=True)
                yield ObjectInfo(key=rel + entry.name, size=st.st_size, mtime=st.st_mtime, etag=None)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            raise StorageError(f"cannot delete {path}: {e}") from e
        self._remove_empty_dirs(path.parent)

    def delete_prefix(self, prefix: str, *, page_size: int | None = None) -> int:
        if not prefix:
            raise ValueError("delete_prefix needs a non-empty prefix")
        _check_prefix(prefix)
        base_rel = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        start = self.root / base_rel if base_rel else self.root
        # temp files of a killed writer under the prefix go too (else their directory is never removed)
        found = [o.key for o in self._walk(start, base_rel, tmp=True) if o.key.startswith(prefix)]
        keys = [k for k in found if not k.rsplit("/", 1)[-1].startswith(TMP_PREFIX)]
        dirs = set()
        for key in found:
            path = self.root / key
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as e:
                raise StorageError(f"cannot delete {path}: {e}") from e
            dirs.add(path.parent)
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            self._remove_empty_dirs(d)
        return len(keys)

    def remove_stale_temp(self, max_age: float = STALE_TMP_SECONDS) -> int:
        """Delete temp files of atomic writes (``.tmp-*``) untouched for ``max_age`` seconds - left by a
        writer that was killed - outside hidden folders (e.g. a build's ``.work``); returns how many."""
        import time

        cutoff = time.time() - max_age
        stale = [
            o.key
            for o in self._walk(self.root, "", tmp=True)
            if o.key.rsplit("/", 1)[-1].startswith(TMP_PREFIX)
            and o.mtime < cutoff
            and not any(p.startswith(".") for p in o.key.split("/")[:-1])
        ]
        for key in stale:
            path = self.root / key
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._remove_empty_dirs(path.parent)
        return len(stale)

    def _remove_empty_dirs(self, directory: Path) -> None:
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


def atomic_write(path: Path, writer: Any, *, tmp_prefix: str = ".tmp-", durable: bool = True) -> None:
    """Write a file so readers see the old content or the new, never a part: temp file in the same
    directory, fsync, rename over `path`, fsync the directory. `writer(f)` writes to the binary file.
    ``durable=False`` skips the two fsyncs (for files whose loss in a crash costs only time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{tmp_prefix}{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)


def _file_mode() -> int:
    """0666 less the process umask: the mode ``open()`` creates files with. The umask is read from /proc
    (``os.umask`` can only read it by setting it, process-wide, racing other threads' file creation)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
