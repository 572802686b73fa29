"""Why the service is unhealthy or degraded: one :class:`Problem` per component (config, model, index),
as /health reports them, and the query/index precision mismatch warning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handler.core.errors import SearchError

__all__ = ["Problem", "precision_mismatch", "problem_of"]


@dataclass(frozen=True)
class Problem:
    """Why a component is not available: ``component`` (config, model, index), ``code``, ``message``."""

    component: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"component": self.component, "code": self.code, "message": self.message}


def problem_of(component: str, exc: BaseException) -> Problem:
    """The problem an exception means: a :class:`SearchError` keeps its code and message."""
    if isinstance(exc, SearchError):
        return Problem(component, exc.code, exc.message)
    return Problem(component, f"{component}_load_failed", f"{type(exc).__name__}: {exc}")


def precision_mismatch(embedder: Any, index: Any) -> Problem | None:
    """A warning when queries are encoded at another precision than the index's vectors (served anyway:
    int8 vs fp32 vectors of one model agree to a cosine of ~0.99, see docs/deploy.md)."""
    built = index.manifest.get("precision")
    if not isinstance(built, str) or built == embedder.precision:
        return None
    return Problem(
        "index",
        "precision_mismatch",
        f"queries are encoded with the {embedder.precision} model but index version {index.version} "
        f"holds {built} vectors: results are close but measurably worse; set PRECISION={built} or "
        f"rebuild the index with --precision {embedder.precision}",
    )
