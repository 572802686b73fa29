"""The service's model and index, loaded once per process, and the index hot swap.

``ServiceState.load()`` never raises: a configuration, model or index problem is recorded (``problems``)
and logged, ``/health`` reports it with a 503, and the module that built the state still imports.

Hot swap: before a request is handled, :meth:`ServiceState.maybe_refresh` reads the index pointer (at
most every ``INDEX_REFRESH_SECONDS``; 0 = every request). When it names another version, that version is
loaded and verified (checksums, model fingerprint) and then replaces the old one in a single reference
assignment; requests take a snapshot of the index when they start, so each request sees exactly one
version. A version that fails to load is logged and the old index stays; the same version is not tried
again for ``FAILED_RETRY_SECONDS`` (at least the refresh interval).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from handler.core.bundle import RANDOM_INIT_WARNING
from handler.logs import emit_metrics, log_event
from handler.problems import Problem, precision_mismatch, problem_of

if TYPE_CHECKING:
    from handler.config import Settings
    from handler.core.runtime import Embedder
    from handler.core.search import SearchIndex

__all__ = ["FAILED_RETRY_SECONDS", "ServiceState"]

FAILED_RETRY_SECONDS = 60.0


@dataclass
class ServiceState:
    """Holds the settings, the :class:`Embedder` and the current :class:`SearchIndex` (or the reasons why
    they are missing). Thread-safe; one per process."""

    settings: Settings | None
    embedder: Embedder | None = None
    index: SearchIndex | None = None
    config_problem: Problem | None = None
    model_problem: Problem | None = None
    index_problem: Problem | None = None
    timings: dict[str, float] = field(default_factory=dict)
    loaded_at: float = 0.0
    swaps: int = 0
    _last_check: float = field(default=0.0, repr=False)
    _failed: dict[str, float] = field(default_factory=dict, repr=False)
    _refresh_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _model_thread: threading.Thread | None = field(default=None, repr=False)

    # -- construction ---------------------------------------------------------------------------------------
    #: API_KEY of a process whose configuration is invalid (no Settings to hold it): still required.
    fallback_api_key: str | None = field(default=None, repr=False)

    @classmethod
    def failed_config(cls, exc: BaseException, api_key: str | None = None) -> ServiceState:
        """A state for a process whose configuration is invalid: every route but /health answers 503.
        ``api_key`` (the raw API_KEY, if any) still guards the routes and the details of /health."""
        problem = problem_of("config", exc)
        state = cls(
            settings=None,
            config_problem=problem,
            fallback_api_key=api_key if api_key and api_key.strip() else None,
        )
        log_event("config_invalid", "ERROR", code=problem.code, message=problem.message)
        return state

    def start(self) -> ServiceState:
        """Begin loading the model bundle in a thread, so the caller can import the web stack meanwhile;
        :meth:`load` waits for it. Never raises; returns self."""
        if self.settings is not None and self._model_thread is None:
            # not a daemon: interpreter exit waits for it (a session still being built while the
            # interpreter tears down aborts the process), then runtime's atexit hook releases the sessions
            self._model_thread = threading.Thread(target=self._load_model, name="model-load")
            self._model_thread.start()
        return self

    def load(self) -> ServiceState:
        """Load the bundle (or wait for :meth:`start`'s thread), then the index (if configured). Never raises;
        returns self."""
        if self.settings is None:
            return self
        s = self.settings
        if self._model_thread is not None:
            self._model_thread.join()
            self._model_thread = None
        else:
            self._load_model()
        if s.index_uri is not None and self.embedder is None:
            self.index_problem = Problem(
                "index",
                "model_unavailable",
                "index not loaded: it cannot be verified without the model bundle",
            )
        elif s.index_uri is not None:
            t1 = time.perf_counter()
            self._load_index()
            self.timings["index_load_ms"] = round((time.perf_counter() - t1) * 1000, 2)
        self._last_check = time.monotonic()
        self.loaded_at = time.time()
        return self

    def _load_model(self) -> None:
        assert self.settings is not None
        s = self.settings
        t0 = time.perf_counter()
        try:
            from handler.core.runtime import load_bundle

            # The visual session is created in a background thread once the text tower is ready.
            self.embedder = load_bundle(
                s.model_uri,
                precision=s.precision,
                threads=s.ort_threads,
                max_pixels=s.max_image_pixels,
                cache_dir=s.cache_dir,
                verify=s.model_verify,
                background_visual=True,
            )
            self.model_problem = None
        except Exception as e:  # any failure is reported by /health, never raised at import
            self.model_problem = problem_of("model", e)
            log_event(
                "model_load_failed",
                "ERROR",
                uri=s.model_uri,
                code=self.model_problem.code,
                message=self.model_problem.message,
            )
        self.timings["model_load_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        if self.embedder is not None:
            log_event(
                "model_loaded",
                uri=s.model_uri,
                model=self.model_id,
                precision=s.precision,
                fingerprint=self.embedder.model_fingerprint,
                dim=self.embedder.dim,
                load_ms=self.timings["model_load_ms"],
            )

    # -- properties -----------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str | None:
        if self.settings is not None and self.settings.model_id:
            return self.settings.model_id
        if self.embedder is None:
            return None
        manifest = self.embedder.bundle.manifest["model"]
        pretrained = manifest.get("pretrained")
        name = str(manifest.get("name") or "model")
        if isinstance(pretrained, str) and pretrained:
            # a local checkpoint path says nothing to a client: keep its file name only
            return f"{name}/{pretrained.replace(chr(92), '/').rsplit('/', 1)[-1]}"
        return name

    @property
    def api_key(self) -> str | None:
        return self.settings.api_key if self.settings is not None else self.fallback_api_key

    @property
    def index_configured(self) -> bool:
        return self.settings is not None and self.settings.index_uri is not None

    def problems(self) -> list[Problem]:
        """What keeps the service from being healthy (empty when it is)."""
        out = [p for p in (self.config_problem, self.model_problem) if p is not None]
        if self.index_configured and self.index is None:
            out.append(self.index_problem or Problem("index", "index_unavailable", "index not loaded"))
        return out

    def healthy(self) -> bool:
        return not self.problems()

    def warnings(self) -> list[Problem]:
        """What is served but not as intended (the service stays healthy): a random-init model bundle, and a
        query precision that differs from the one the index was built with."""
        idx, emb = self.index, self.embedder
        found = []
        if emb is not None and emb.info().get("random_init"):
            found.append(Problem("model", "random_init", RANDOM_INIT_WARNING))
        mismatch = precision_mismatch(emb, idx) if emb is not None and idx is not None else None
        return [*found, mismatch] if mismatch is not None else found

    # -- index loading and hot swap -------------------------------------------------------------------------
    def _open_index(self) -> SearchIndex:
        from handler.core.index import load_index

        assert self.settings is not None and self.settings.index_uri is not None
        assert self.embedder is not None
        return load_index(
            self.settings.index_uri,
            expected_fingerprint=self.embedder.model_fingerprint,
            cache_dir=f"{self.settings.cache_dir.rstrip('/')}/index",
            verify=self.settings.index_verify,
        )

    def _load_index(self, version: str | None = None) -> bool:
        """Load the version the pointer names and swap it in; False (old index kept) on failure."""
        from handler.core.index_format import read_pointer

        assert self.settings is not None and self.settings.index_uri is not None  # callers check
        uri = self.settings.index_uri
        t0 = time.perf_counter()
        try:
            if version is None:
                pointer = read_pointer(uri)
                version = pointer["version"] if pointer is not None else None
            new = self._open_index()
        except Exception as e:
            problem = problem_of("index", e)
            if version is not None:
                self._failed[version] = time.monotonic()
            if self.index is None:
                self.index_problem = problem
            level = "ERROR"
            event = "index_load_failed" if self.index is None else "index_swap_failed"
            log_event(
                event,
                level,
                uri=uri,
                code=problem.code,
                message=problem.message,
                wanted_version=version,
                kept_version=self.index.version if self.index is not None else None,
            )
            return False
        old = self.index
        self.index = new  # the swap: one reference assignment; running requests hold their own snapshot
        self.index_problem = None
        ms = round((time.perf_counter() - t0) * 1000, 2)
        assert self.embedder is not None
        mismatch = precision_mismatch(self.embedder, new)
        if mismatch is not None:  # a log line and a CloudWatch metric (alarmable), once per loaded version
            emit_metrics(
                {"precision_mismatch": (1, "Count")},
                {
                    "query_precision": self.embedder.precision,
                    "index_precision": str(new.manifest.get("precision")),
                },
                time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                level="WARNING",
                event="precision_mismatch",
                index_version=new.version,
                message=mismatch.message,
            )
        if old is None:
            log_event(
                "index_loaded", uri=uri, index_version=new.version, count=new.count, dim=new.dim, load_ms=ms
            )
        else:
            self.swaps += 1
            log_event(
                "index_swapped",
                uri=uri,
                index_version=new.version,
                previous_version=old.version,
                count=new.count,
                load_ms=ms,
            )
        return True

    def refresh_due(self, now: float | None = None) -> bool:
        """Whether :meth:`maybe_refresh` would check the pointer now (cheap: no I/O)."""
        if not self.index_configured or self.embedder is None:
            return False
        assert self.settings is not None
        interval = self.settings.index_refresh_seconds
        return interval <= 0 or (time.monotonic() if now is None else now) - self._last_check >= interval

    def maybe_refresh(self, now: float | None = None) -> None:
        """Check the index pointer if the refresh interval has passed, and swap in a new version.
        Only one caller checks at a time; the others go on with the current index. Never raises."""
        if not self.index_configured or self.embedder is None:
            return
        assert self.settings is not None
        interval = self.settings.index_refresh_seconds
        now = time.monotonic() if now is None else now
        if interval > 0 and now - self._last_check < interval:
            return
        if not self._refresh_lock.acquire(blocking=False):
            return
        try:
            self._last_check = now
            self._refresh()
        except Exception as e:  # a pointer read failure keeps the current index
            log_event(
                "index_check_failed",
                "WARNING",
                uri=self.settings.index_uri,
                message=f"{type(e).__name__}: {e}",
            )
        finally:
            self._refresh_lock.release()

    def _refresh(self) -> None:
        from handler.core.index_format import check_for_update

        assert self.settings is not None and self.settings.index_uri is not None  # maybe_refresh checks
        current = self.index.version if self.index is not None else None
        version = check_for_update(self.settings.index_uri, current)
        if version is None:
            return
        failed_at = self._failed.get(version)
        retry_after = max(FAILED_RETRY_SECONDS, self.settings.index_refresh_seconds)
        if failed_at is not None and time.monotonic() - failed_at < retry_after:
            return
        if self._load_index(version=version):
            self._failed.pop(version, None)

    # -- reporting ------------------------------------------------------------------------------------------
    def health(self, details: bool = True) -> dict[str, Any]:
        """The /health body. Without ``details`` (a caller without the API key) problems carry their
        component and code only: messages may name buckets, paths and configuration values."""
        problems = self.problems()
        out: dict[str, Any] = {
            "status": "ok" if not problems else "unavailable",
            "model": {
                "loaded": self.embedder is not None,
                "fingerprint": self.embedder.model_fingerprint if self.embedder is not None else None,
            },
            "index": None,
        }
        if self.index_configured:
            out["index"] = {
                "loaded": self.index is not None,
                "version": self.index.version if self.index is not None else None,
            }
        else:
            out["mode"] = "embedding-only"
        warnings = self.warnings()
        if warnings:
            out["warnings"] = [
                w.as_dict() if details else {"component": w.component, "code": w.code} for w in warnings
            ]
        if problems and details:
            out["problems"] = [p.as_dict() for p in problems]
            out["reason"] = "; ".join(f"{p.component}: {p.code}: {p.message}" for p in problems)
        elif problems:
            out["problems"] = [{"component": p.component, "code": p.code} for p in problems]
            out["reason"] = "; ".join(f"{p.component}: {p.code}" for p in problems)
        return out
