"""The build's local work directory: a lock, checkpoint shards of embeddings, and the pending version.

Layout::

    WORK/
      LOCK                       flock'ed by the running build (released by the kernel on SIGKILL)
      previous/                  S3 DEST: the current version's items.jsonl + embeddings.npy (checksummed)
      pending.json               the version being published: removed from DEST by the next build if the
                                 publish never completed
      shards-<key>/              key = sha256(model fingerprint, precision, backend, dim)[:16]
        meta.json                what the key stands for (for humans)
        000003-<rand>.npz        sha256 (S64, content hash of the image file), vectors float32 [n, dim],
                                 width, height (int32); written to a temp file, fsynced, renamed

Shards are keyed by content hash, so a shard is valid for any id whose file has that content, and a
shard directory only ever holds vectors of one model + precision + backend: shards of another key are
never read (they are deleted when a build with a different key starts). After SIGKILL the shards
written so far survive; a re-run loads them and embeds only the rest. Cleaned after a successful publish.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handler.core.storage import atomic_write
from handler.core.uri import parse_uri
from index_builder.errors import BuildError

__all__ = ["CachedVector", "ShardWriter", "WorkDir", "default_work_dir"]

LOCK = "LOCK"
PENDING = "pending.json"
SHARD_PREFIX = "shards-"
PREVIOUS = "previous"  # the previous version's items + embeddings downloaded from an S3 DEST


def default_work_dir(dest_uri: str) -> Path:
    """``DEST/.work`` for a local DEST; for S3 a local cache directory keyed by the DEST URI."""
    loc = parse_uri(dest_uri)
    if loc.is_s3:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clip-index-builder"
        return base / hashlib.sha256(str(loc).encode()).hexdigest()[:16]
    return loc.local_path().absolute() / ".work"


def shard_key(
    model_fingerprint: str,
    precision: str,
    backend: str,
    dim: int,
    image_preprocess: dict[str, Any] | None = None,
) -> str:
    """Checkpoints are shared only by builds that compute the same vectors (``image_preprocess``: the
    index's recorded :class:`handler.core.images.ImageOptions`)."""
    parts: list[Any] = [model_fingerprint, precision, backend, int(dim)]
    if image_preprocess is not None:
        parts.append(image_preprocess)
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CachedVector:
    vector: np.ndarray
    width: int | None
    height: int | None


class WorkDir:
    def __init__(self, root: Path, key: str, meta: dict[str, Any]):
        self.root = root
        self.key = key
        self.meta = meta
        self.shard_dir = root / f"{SHARD_PREFIX}{key}"
        self._lock_fd: int | None = None
        self.created_root = False

    # -- lifecycle ------------------------------------------------------------------------------------------
    def open(self) -> WorkDir:
        try:
            if not self.root.exists():
                self.created_root = True
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise BuildError(
                f"cannot create the work directory {self.root} ({e.strerror or e}); "
                "pass --work-dir with a writable location"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BuildError(
                f"another build is running with work directory {self.root} (it holds {self.root / LOCK}); "
                "wait for it to finish, or pass a different --work-dir"
            ) from None
        self._lock_fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.shard_dir.mkdir(exist_ok=True)
        meta_path = self.shard_dir / "meta.json"
        if not meta_path.exists():
            atomic_write(meta_path, lambda f: f.write(json.dumps(self.meta, indent=2).encode()))
        return self

    def discard_stale(self) -> int:
        """Delete shard directories of other models / precisions / backends; returns how many shards."""
        count = 0
        for entry in self.root.iterdir():
            if entry.is_dir() and entry.name.startswith(SHARD_PREFIX) and entry != self.shard_dir:
                count += sum(1 for p in entry.glob("*.npz"))
                shutil.rmtree(entry, ignore_errors=True)
        return count

    def close(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = None

    def clean(self) -> None:
        """After a successful publish: remove shards, pending marker and lock (and the root if it is
        empty)."""
        for entry in list(self.root.iterdir()) if self.root.is_dir() else []:
            if entry.is_dir() and (entry.name.startswith(SHARD_PREFIX) or entry.name == PREVIOUS):
                shutil.rmtree(entry, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.root / PENDING).unlink()
        with contextlib.suppress(OSError):
            (self.root / LOCK).unlink()
        self.close()
        with contextlib.suppress(OSError):
            self.root.rmdir()

    # -- pending version ------------------------------------------------------------------------------------
    def read_pending(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.root / PENDING).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_pending(self, info: dict[str, Any]) -> None:
        atomic_write(self.root / PENDING, lambda f: f.write(json.dumps(info).encode()))

    def clear_pending(self) -> None:
        with contextlib.suppress(OSError):
            (self.root / PENDING).unlink()

    # -- shards ---------------------------------------------------------------------------------------------
    def load_shards(self, dim: int, warn: Any) -> tuple[dict[str, CachedVector], int]:
        """All vectors checkpointed under this key: ``({sha256: CachedVector}, number of shard files)``.
        A corrupt shard (e.g. a disk problem) is deleted with a warning - its images are embedded again."""
        cache: dict[str, CachedVector] = {}
        shards = sorted(self.shard_dir.glob("*.npz"))
        for path in shards:
            try:
                with np.load(path, allow_pickle=False) as z:
                    shas, vectors = z["sha256"], z["vectors"]
                    widths, heights = z["width"], z["height"]
                if (
                    vectors.ndim != 2
                    or vectors.shape[1] != dim
                    or not (len(shas) == len(vectors) == len(widths) == len(heights))
                ):
                    raise ValueError(f"unexpected shapes {vectors.shape}, dim {dim}")
                if not np.all(np.isfinite(vectors)):
                    raise ValueError("non-finite values")
            except Exception as e:
                warn(
                    f"checkpoint shard {path} is unreadable ({e}); deleted, its images will be embedded again"
                )
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            for sha, vec, w, h in zip(shas, vectors.astype(np.float32), widths, heights, strict=True):
                cache[sha.decode("ascii")] = CachedVector(vec, int(w), int(h))
        return cache, len(shards)

    def shard_writer(self, shard_size: int, max_seconds: float = 60.0) -> ShardWriter:
        existing = [p.name.split("-", 1)[0] for p in self.shard_dir.glob("*.npz")]
        start = max((int(s) for s in existing if s.isdigit()), default=-1) + 1
        return ShardWriter(self.shard_dir, shard_size, max_seconds, start)


class ShardWriter:
    """Buffers (sha256, vector, width, height) rows; writes a shard every ``shard_size`` rows or
    ``max_seconds``, whichever comes first, and on :meth:`flush`."""

    def __init__(self, directory: Path, shard_size: int, max_seconds: float, start: int = 0):
        self.directory = directory
        self.shard_size = shard_size
        self.max_seconds = max_seconds
        self.seq = start
        self.written = 0
        self._rows: list[tuple[str, np.ndarray, int, int]] = []
        self._last = time.monotonic()

    def add(self, sha: str, vector: np.ndarray, width: int, height: int) -> None:
        self._rows.append((sha, vector, width, height))

    def maybe_flush(self) -> None:
        if len(self._rows) >= self.shard_size or (
            self._rows and time.monotonic() - self._last >= self.max_seconds
        ):
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        shas = np.array([r[0].encode("ascii") for r in rows], dtype="S64")
        vectors = np.stack([r[1] for r in rows]).astype(np.float32)
        widths = np.array([r[2] for r in rows], dtype=np.int32)
        heights = np.array([r[3] for r in rows], dtype=np.int32)
        path = self.directory / f"{self.seq:06d}-{secrets.token_hex(4)}.npz"
        atomic_write(path, lambda f: np.savez(f, sha256=shas, vectors=vectors, width=widths, height=heights))
        self.seq += 1
        self.written += 1
