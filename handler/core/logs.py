"""The one logging path: stdlib ``logging`` rendered as JSON lines on stdout, CloudWatch EMF metric lines,
and a plain stderr rendering for the command-line tools.

Lambda ships every stdout line to CloudWatch Logs; a line that is a JSON object with an ``_aws`` key is
also turned into metrics (EMF). :func:`log_event` logs ``{"time", "level", "event", ...fields}`` through the
``clip_search.events`` logger, whose handler writes to stdout (not the root logger, so the Lambda runtime's
``[INFO] <time> <request id>`` prefix never breaks the JSON); :func:`configure_logging` routes library
loggers (``handler``, ``index_builder``...) to the same JSON lines. CLIs call :func:`configure_cli_logging`
instead: their loggers print ``message`` / ``warning: message`` on stderr.

The request line never holds image data or query text: only their sizes.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

__all__ = [
    "EMF_NAMESPACE",
    "CliFormatter",
    "JsonFormatter",
    "configure_cli_logging",
    "configure_logging",
    "dumps",
    "emit",
    "emit_metrics",
    "log_event",
]

EMF_NAMESPACE = "ClipSearch"
_lock = threading.Lock()
_stream: TextIO | None = None  # None: sys.stdout at write time (pytest's capsys swaps it)
_level = logging.INFO
_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}


def _default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def dumps(record: Any, **kwargs: Any) -> str:
    """JSON text that is always encodable as UTF-8: lone surrogates (from a Lambda event's JSON, say) are
    written as ``\\udXXX`` escapes instead of breaking the write."""
    line = json.dumps(record, default=_default, ensure_ascii=False, **kwargs)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(record, default=_default, ensure_ascii=True, **kwargs)
    return line


def emit(record: Mapping[str, Any], stream: TextIO | None = None) -> None:
    """Write one JSON object as one line (thread-safe)."""
    line = dumps(record, separators=(",", ":"))
    out = stream or _stream or sys.stdout
    with _lock:
        out.write(line + "\n")
        out.flush()


def log_event(event: str, level: str = "INFO", **fields: Any) -> None:
    """A structured log line ``{"time", "level", "event", ...fields}`` if ``level`` passes LOG_LEVEL."""
    _events.log(_LEVELS.get(level, logging.INFO), event, extra={"event_fields": (level, fields)})


def emit_metrics(
    metrics: Mapping[str, tuple[float, str]],
    dimensions: Mapping[str, str] | None = None,
    namespace: str = EMF_NAMESPACE,
    **properties: Any,
) -> dict[str, Any]:
    """One EMF line: ``metrics`` maps a name to ``(value, unit)``; ``dimensions`` (name -> value) become a
    single dimension set; ``properties`` are extra searchable fields. Returns the record written."""
    dims = dict(dimensions or {})
    record: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [list(dims)] if dims else [[]],
                    "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
                }
            ],
        },
        **properties,
        **dims,
        **{name: value for name, (value, _) in metrics.items()},
    }
    emit(record)
    return record


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """``logging`` records as the same JSON lines (for library loggers such as ``handler.core.index``)."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event_fields", None)
        if event is not None:  # log_event: the compact event line
            level, fields = event
            return dumps(
                {"time": _now(), "level": level, "event": record.msg, **fields}, separators=(",", ":")
            )
        out: dict[str, Any] = {
            "time": _now(),
            "level": record.levelname,
            "event": "log",
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return dumps(out)


class _StdoutHandler(logging.StreamHandler):
    """A StreamHandler bound to whatever ``sys.stdout`` is when a record is written."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = _stream or sys.stdout
        super().emit(record)


def configure_logging(
    level: str = "INFO", loggers: Sequence[str] = ("handler", "mangum"), stream: TextIO | None = None
) -> None:
    """Set the level of :func:`log_event` and route the given library loggers to JSON lines on stdout
    (idempotent: a second call replaces the handler)."""
    global _level, _stream
    _level = _LEVELS.get(level.upper(), logging.INFO)
    _stream = stream
    _events.setLevel(_level)
    for name in loggers:
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if isinstance(h, _StdoutHandler):
                logger.removeHandler(h)
        handler = _StdoutHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.setLevel(_level)
        logger.propagate = False


_events = logging.getLogger("clip_search.events")
_events.addHandler(_StdoutHandler())
_events.handlers[0].setFormatter(JsonFormatter())
_events.setLevel(_level)
_events.propagate = False


class CliFormatter(logging.Formatter):
    """``message`` for INFO and below, ``warning: message`` / ``error: message`` above (a CLI's stderr)."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {msg}"
        return f"warning: {msg}" if record.levelno >= logging.WARNING else msg


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler bound to whatever ``sys.stderr`` is when a record is written."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_cli_logging(name: str, level: int = logging.INFO) -> None:
    """Route logger ``name`` to stderr in :class:`CliFormatter` form (replacing a :func:`configure_logging`
    route). Idempotent."""
    logger = logging.getLogger(name)
    for h in list(logger.handlers):
        if isinstance(h, (_StderrHandler, _StdoutHandler)):
            logger.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(CliFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
