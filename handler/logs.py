"""The service's name for :mod:`handler.core.logs` (JSON log lines, EMF metrics), shared with the builder."""

from handler.core.logs import (
    EMF_NAMESPACE,
    JsonFormatter,
    configure_logging,
    dumps,
    emit,
    emit_metrics,
    log_event,
)

__all__ = [
    "EMF_NAMESPACE",
    "JsonFormatter",
    "configure_logging",
    "dumps",
    "emit",
    "emit_metrics",
    "log_event",
]
