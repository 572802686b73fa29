"""AWS Lambda entry point: ``handler.lambda_function.lambda_handler``.

The bundle (``MODEL_URI``) and the index (``INDEX_URI``) are loaded once per container, here at import
(Mangum runs with ``lifespan="off"``: a lifespan would run per invocation). Loading never raises: an
invalid configuration, a missing or corrupt artifact or a model/index fingerprint mismatch is logged and
reported by ``GET /health`` (503) so the function still answers. Warm containers pick up new index
versions (see :mod:`handler.state`).

Cold start: the light modules come first, then the bundle starts loading in a thread (numpy, onnxruntime,
the text session) while this thread imports the web stack (FastAPI, Mangum); the visual session follows in
the background once the text tower is ready (``handler.core.runtime``).
"""

from __future__ import annotations

import os
import time

_T0 = time.perf_counter()

from handler.config import Settings  # noqa: E402
from handler.core.errors import ConfigError  # noqa: E402
from handler.logs import configure_logging, emit_metrics  # noqa: E402
from handler.state import ServiceState  # noqa: E402

__all__ = ["app", "lambda_handler", "state"]

_ON_LAMBDA = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def build(environ: dict[str, str] | None = None) -> tuple[ServiceState, object]:
    """Settings from the environment -> loaded state -> app (never raises for bad configuration)."""
    try:
        settings = Settings.from_env(environ)
    except ConfigError as e:
        configure_logging("INFO", loggers=("handler", "mangum") if _ON_LAMBDA else ())
        state = ServiceState.failed_config(
            e, api_key=(os.environ if environ is None else environ).get("API_KEY")
        )
    else:
        configure_logging(settings.log_level, loggers=("handler", "mangum") if _ON_LAMBDA else ())
        state = ServiceState(settings).start()  # the model loads in a thread while the web stack imports
    global _T_IMPORTS
    from handler.app import create_app
    from handler.lambda_adapter import SafeMangum  # noqa: F401 - imported here to overlap with the load

    _T_IMPORTS = time.perf_counter()
    state.load()
    return state, create_app(state)


_T_IMPORTS = _T0
state, app = build()
from handler.lambda_adapter import SafeMangum  # noqa: E402

lambda_handler = SafeMangum(app, lifespan="off")

INIT_MS = round((time.perf_counter() - _T0) * 1000, 2)
emit_metrics(
    {
        "cold_start": (1, "Count"),
        "init_ms": (INIT_MS, "Milliseconds"),
        "import_ms": (round((_T_IMPORTS - _T0) * 1000, 2), "Milliseconds"),
        **{name: (value, "Milliseconds") for name, value in state.timings.items()},
    },
    {"function": os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local")},
    event="cold_start",
    healthy=state.healthy(),
    index_version=state.index.version if state.index is not None else None,
    problems=[p.as_dict() for p in state.problems()] or None,
)
