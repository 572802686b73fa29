"""One build at a time per index: a lock object ``.rebuild/LOCK`` in the index prefix.

The lock is a small JSON object ``{"run_id", "owner", "created", "expires", "version"}``:

* **acquire**: create it only if it does not exist - S3 ``PutObject`` with ``If-None-Match: *`` (AWS and
  SeaweedFS answer 412 to the loser), locally ``open(O_CREAT | O_EXCL)``. Exactly one of two planners wins.
* **stale lock**: one whose ``expires`` has passed, or whose owner is a process of this host that no longer
  exists (a SIGKILLed local build), is taken over with a compare-and-swap: S3 ``PutObject`` with
  ``If-Match: <etag read>``; locally rename-aside and check. Again one winner.
* **release**: S3 ``DeleteObject`` with ``If-Match`` (only our own lock is deleted); locally unlink after
  checking the run id.

The run holding the lock is checked again by publish right before the pointer moves
(:meth:`BuildLock.held_by`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from handler.core.storage import LocalStore, S3Store, StorageError, Store
from index_builder.errors import BuildError

__all__ = ["LOCK_KEY", "BuildLock", "BuildLocked", "LockInfo", "holding_lock"]

WORK_PREFIX = ".rebuild/"
LOCK_KEY = WORK_PREFIX + "LOCK"


class BuildLocked(BuildError):
    """Another build holds the index's lock; nothing was changed."""


@dataclass
class LockInfo:
    data: dict[str, Any]
    etag: str | None  # S3 ETag (compare-and-swap token); None for local files


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_dead(owner: Any) -> bool:
    """True when ``owner`` is a process of this host that no longer runs."""
    if not isinstance(owner, str) or ":" not in owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _precondition_failed(exc: Exception) -> bool:
    code = str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


class BuildLock:
    """The lock of one index store. ``ttl``: seconds a lock stays valid without its holder."""

    def __init__(self, store: Store, ttl: float = 6 * 3600):
        self.store = store
        self.ttl = ttl

    # -- reading -----------------------------------------------------------------------------------------
    def read(self) -> LockInfo | None:
        if isinstance(self.store, S3Store):
            try:
                r = self.store.client.get_object(Bucket=self.store.bucket, Key=self.store._key(LOCK_KEY))
                return LockInfo(self._parse(r["Body"].read()), r.get("ETag"))
            except Exception as e:
                err = self.store._error(e, LOCK_KEY, "read") if not isinstance(e, StorageError) else e
                if isinstance(err, FileNotFoundError):
                    return None
                raise err from e
        try:
            return LockInfo(self._parse(self.store.read_bytes(LOCK_KEY)), None)
        except FileNotFoundError:
            return None

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any]:
        try:
            data = json.loads(raw)
        except ValueError:
            return {}  # a torn or foreign lock: treated as expired
        return data if isinstance(data, dict) else {}

    def stale(self, info: LockInfo, now: float | None = None) -> bool:
        expires = info.data.get("expires")
        now = time.time() if now is None else now
        if not isinstance(expires, (int, float)) or expires <= now:
            return True
        return _owner_dead(info.data.get("owner"))

    def held_by(self, run_id: str) -> bool:
        info = self.read()
        return info is not None and info.data.get("run_id") == run_id

    # -- writing -----------------------------------------------------------------------------------------
    def _body(self, run_id: str, **extra: Any) -> bytes:
        now = time.time()
        data = {"run_id": run_id, "owner": _owner(), "created": now, "expires": now + self.ttl, **extra}
        return json.dumps(data, sort_keys=True).encode()

    def _create(self, body: bytes) -> bool:
        if isinstance(self.store, S3Store):
            try:
                self.store.client.put_object(
                    Bucket=self.store.bucket, Key=self.store._key(LOCK_KEY), Body=body, IfNoneMatch="*"
                )
                return True
            except Exception as e:
                if _precondition_failed(e):
                    return False
                raise self.store._error(e, LOCK_KEY, "create") from e
        assert isinstance(self.store, LocalStore)
        path = self.store.local_path(LOCK_KEY)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-LOCK.{secrets.token_hex(4)}")
        tmp.write_bytes(body)
        try:
            os.link(tmp, path)  # atomic create-if-absent with the full content in place
            return True
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _swap(self, old: LockInfo, body: bytes) -> bool:
        """Replace the lock ``old`` (as read) with ``body``; False if it changed meanwhile."""
        if isinstance(self.store, S3Store):
            try:
                self.store.client.put_object(
                    Bucket=self.store.bucket, Key=self.store._key(LOCK_KEY), Body=body, IfMatch=old.etag
                )
                return True
            except Exception as e:
                if _precondition_failed(e) or isinstance(
                    self.store._error(e, LOCK_KEY, "swap"), FileNotFoundError
                ):
                    return False
                raise self.store._error(e, LOCK_KEY, "replace") from e
        assert isinstance(self.store, LocalStore)
        path = self.store.local_path(LOCK_KEY)
        aside = path.with_name(f".tmp-LOCK.stale.{secrets.token_hex(4)}")
        try:
            os.rename(path, aside)  # only one of two takers gets the file
        except FileNotFoundError:
            return self._create(body)
        if self._parse(aside.read_bytes()) != old.data:  # we moved a fresh lock: put it back
            with contextlib.suppress(OSError):
                os.link(aside, path)
            aside.unlink()
            return False
        aside.unlink()
        return self._create(body)

    def acquire(self, run_id: str, **extra: Any) -> LockInfo | None:
        """Take the lock for ``run_id``. Returns the stale lock that was taken over (its run may have left
        an unpublished version behind), or None. Raises :class:`BuildLocked` when another live build holds
        it."""
        body = self._body(run_id, **extra)
        for _ in range(3):
            if self._create(body):
                return None
            info = self.read()
            if info is None:
                continue  # released meanwhile
            if info.data.get("run_id") == run_id:
                return None  # our own (a retried planner)
            if not self.stale(info):
                raise BuildLocked(self.describe(info))
            if self._swap(info, body):
                return info
        raise BuildLocked(f"could not take the lock {self.store.uri_for(LOCK_KEY)}: it keeps changing")

    def describe(self, info: LockInfo) -> str:
        d = info.data
        left = max(0, int(float(d.get("expires", 0)) - time.time()))
        return (
            f"another build (run {d.get('run_id')}, started by {d.get('owner')}) holds "
            f"{self.store.uri_for(LOCK_KEY)} for {left} more second(s); nothing was changed. Wait for it to "
            "finish (or, if it died, for the lock to expire), then start again"
        )

    def refresh(self, run_id: str, **extra: Any) -> None:
        """Re-take the lock for ``run_id`` (publish after a redrive): fine if it is ours, absent or stale."""
        info = self.read()
        if info is not None and info.data.get("run_id") == run_id:
            merged = {
                k: v for k, v in info.data.items() if k not in ("run_id", "owner", "created", "expires")
            }
            if not self._swap(info, self._body(run_id, **{**merged, **extra})):
                raise BuildLocked(
                    f"the lock {self.store.uri_for(LOCK_KEY)} changed while run {run_id} renewed it"
                )
            return
        self.acquire(run_id, **extra)

    def release(self, run_id: str) -> None:
        """Delete the lock if ``run_id`` holds it (never another run's)."""
        info = self.read()
        if info is None or info.data.get("run_id") != run_id:
            return
        if isinstance(self.store, S3Store):
            try:
                self.store.client.delete_object(
                    Bucket=self.store.bucket, Key=self.store._key(LOCK_KEY), IfMatch=info.etag
                )
            except Exception as e:
                if not _precondition_failed(e):
                    raise self.store._error(e, LOCK_KEY, "delete") from e
            return
        self.store.delete(LOCK_KEY)


@contextlib.contextmanager
def holding_lock(
    store: Store,
    run_id: str,
    *,
    forget: Callable[[dict[str, Any]], None] | None = None,
    warn: Callable[[str], None] | None = None,
    ttl: float = 6 * 3600,
    **extra: Any,
) -> Iterator[BuildLock | None]:
    """Hold the index's lock for the block (the serial build: one build at a time, serial or step-wise).
    Raises :class:`BuildLocked` before the block when another live build holds it; ``forget(data)`` cleans up
    after the dead holder of a stale lock that was taken over. A release that fails (the store went down) is
    only a warning: the lock expires, or is taken over once this process has exited. A store that is neither
    S3 nor local (a wrapper without conditional writes) is not locked."""
    if not isinstance(store, (S3Store, LocalStore)):
        yield None
        return
    lock = BuildLock(store, ttl=ttl)
    stale = lock.acquire(run_id, **extra)
    try:
        if stale is not None and forget is not None:
            forget(stale.data)
        yield lock
    finally:
        try:
            lock.release(run_id)
        except (StorageError, OSError) as e:
            if warn is not None:
                warn(
                    f"could not release the build lock {store.uri_for(LOCK_KEY)} ({e}); the next build "
                    "takes it "
                    "over once this process has exited (same host) or the lock has expired"
                )
