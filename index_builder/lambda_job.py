"""Single-invocation Lambda entry point of the rebuild (the image's default command; the deployed stack runs
the steps of :mod:`index_builder.sfn_handlers` instead, see template.yaml: RebuildStateMachine).

``handler(event, context)`` maps an event to the argument list of ``python -m index_builder build`` and
runs the CLI's ``main(argv)`` in-process, so the job is exactly the CLI (no dependency on the builder's
internals). Locations come from the function's environment, which the template sets:

    SOURCE_URI      default source (s3://bucket/collection)
    MODEL_URI       the bundle (s3://bucket/models/...)
    INDEX_URI       the index to update (the function may write only under this prefix)
    PRECISION       fp32 | fp16 | int8 (the search function's precision)
    KEEP_VERSIONS   index versions to keep after publishing
    WORKERS         optional: reader threads (--workers)

The event may override a few things (unknown keys are refused, so a typo never runs a silent default build):

    {"source": "s3://bucket/other-prefix",   # --source
     "full": true,                           # --full: re-embed everything (model change, repair)
     "workers": 8, "precision": "int8", "keep_versions": 5, "strict": true}

An EventBridge scheduled event without ``Input`` (it has ``detail-type``) counts as ``{}``. The output
location cannot be overridden: the function's IAM policy only allows writes under INDEX_URI anyway.

Returns ``{"ok": true, "version": <current version>, "index_uri", "argv", "seconds"}`` (a build that finds
nothing changed publishes nothing: the version is the one already served); a failed build
raises :class:`RebuildFailed`, so the invocation is reported as an error (metrics, async retries, DLQ).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from handler.core.logs import configure_logging, log_event

__all__ = ["EVENT_KEYS", "RebuildFailed", "build_argv", "handler"]

# event key -> (CLI flag, type). Booleans are flags without a value.
EVENT_KEYS: dict[str, tuple[str, type]] = {
    "source": ("--source", str),
    "full": ("--full", bool),
    "workers": ("--workers", int),
    "precision": ("--precision", str),
    "keep_versions": ("--keep-versions", int),
    "strict": ("--strict", bool),
    "background": (
        "--background",
        str,
    ),  # transparent images composited over it (white, black, #rrggbb, none)
}
PRECISIONS = ("fp32", "fp16", "int8")


class RebuildFailed(RuntimeError):
    """The build did not publish a version (bad event or configuration, or the CLI exited non-zero)."""


def _env(environ: Mapping[str, str], name: str, required: bool = True) -> str | None:
    value = (environ.get(name) or "").strip()
    if not value:
        if required:
            raise RebuildFailed(f"{name} is not set in the function's environment (template.yaml sets it)")
        return None
    return value


def _value(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise RebuildFailed(f"event[{key!r}] must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RebuildFailed(f"event[{key!r}] must be a positive integer, got {value!r}")
        return value
    if not isinstance(value, str) or not value.strip():
        raise RebuildFailed(f"event[{key!r}] must be a non-empty string, got {value!r}")
    return value.strip()


def normalise_event(event: Any) -> dict[str, Any]:
    """The event as a dict of known keys (EventBridge envelopes unwrapped, ``None`` -> ``{}``)."""
    if event is None:
        return {}
    if isinstance(event, (str, bytes)):
        try:
            event = json.loads(event or "{}")
        except ValueError as e:
            raise RebuildFailed(f"event is not JSON: {e}") from None
    if not isinstance(event, Mapping):
        raise RebuildFailed(f"event must be a JSON object, got {type(event).__name__}")
    if "detail-type" in event:  # an EventBridge event delivered as is (a schedule without Input)
        detail = event.get("detail")
        event = detail if isinstance(detail, Mapping) else {}
    unknown = sorted(set(event) - set(EVENT_KEYS))
    if unknown:
        raise RebuildFailed(f"unknown event key(s) {unknown}; allowed: {sorted(EVENT_KEYS)}")
    return {k: _value(k, v, EVENT_KEYS[k][1]) for k, v in event.items() if v is not None}


def build_argv(event: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """``index_builder`` CLI arguments for ``event`` under ``environ`` (default: ``os.environ``)."""
    environ = os.environ if environ is None else environ
    ev = normalise_event(event)
    source = ev.get("source") or _env(environ, "SOURCE_URI")
    argv = [
        "build",
        "--source",
        str(source),
        "--bundle",
        str(_env(environ, "MODEL_URI")),
        "--out",
        str(_env(environ, "INDEX_URI")),
    ]
    precision = ev.get("precision") or _env(environ, "PRECISION", required=False)
    if precision is not None:
        if precision not in PRECISIONS:
            raise RebuildFailed(f"precision {precision!r}: must be one of {', '.join(PRECISIONS)}")
        argv += ["--precision", precision]
    for key, env_name in (("workers", "WORKERS"), ("keep_versions", "KEEP_VERSIONS")):
        value = ev.get(key)
        if value is None:
            raw = _env(environ, env_name, required=False)
            if raw is not None:
                value = int(raw) if raw.isdigit() else 0
                if value < 1:
                    raise RebuildFailed(f"{env_name}={raw!r}: must be a positive integer")
        if value is not None:
            argv += [EVENT_KEYS[key][0], str(value)]
    if ev.get("background"):
        argv += ["--background", ev["background"]]
    for key in ("full", "strict"):
        if ev.get(key):
            argv.append(EVENT_KEYS[key][0])
    return argv


def run_cli(argv: Sequence[str]) -> int:
    """Run the CLI in-process; argparse's ``SystemExit`` becomes an exit code."""
    from index_builder.cli import main  # never index_builder.__main__: it runs the CLI on import

    try:
        rc = main(list(argv), cli_logging=False)  # the builder's messages stay JSON lines
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    return int(rc or 0)


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """Lambda handler: run one ``index_builder build`` and report the published version."""
    t0 = time.monotonic()
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"), loggers=("index_builder", "handler"))
    argv = build_argv(event)
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    log_event("rebuild_start", argv=argv, remaining_ms=remaining() if callable(remaining) else None)
    rc = run_cli(argv)
    seconds = round(time.monotonic() - t0, 3)
    if rc != 0:
        log_event("rebuild_failed", "ERROR", rc=rc, seconds=seconds)
        raise RebuildFailed(f"index_builder {' '.join(argv)} exited with status {rc} (see the log above)")
    from handler.core.index_format import read_pointer

    index_uri = argv[argv.index("--out") + 1]
    pointer = read_pointer(index_uri)
    result: dict[str, Any] = {
        "ok": True,
        "version": pointer["version"] if pointer else None,
        "index_uri": index_uri,
        "argv": argv,
        "seconds": seconds,
    }
    log_event("rebuild_done", **result)
    return result


if __name__ == "__main__":  # local run: python -m index_builder.lambda_job '{"full": true}'
    print(json.dumps(handler(sys.argv[1] if len(sys.argv) > 1 else {}), indent=2))
