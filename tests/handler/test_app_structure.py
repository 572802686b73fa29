"""Issue 12 #4: the app is routers + middleware modules; the index hot swap is its own middleware; no
writes to Starlette's private request attributes; service modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from handler.app import create_app
from handler.middleware import ApiKeyMiddleware, IndexRefreshMiddleware, RequestLogMiddleware
from handler.state import ServiceState

HANDLER = Path(__file__).resolve().parents[2] / "handler"
SERVICE_MODULES = sorted(p for p in HANDLER.rglob("*.py") if "core" not in p.relative_to(HANDLER).parts)


class FakeState:
    """Enough of ServiceState for the middleware: counts index checks."""

    index = None
    settings = None
    api_key = "k"

    def __init__(self) -> None:
        self.checks = 0

    def refresh_due(self) -> bool:
        return True

    def maybe_refresh(self) -> None:
        self.checks += 1


def test_middleware_order_and_the_swap_is_separate() -> None:
    app = create_app(ServiceState(settings=None, fallback_api_key="k"))
    stack = [m.cls for m in app.user_middleware]  # outermost first
    assert stack == [RequestLogMiddleware, IndexRefreshMiddleware, ApiKeyMiddleware]


@pytest.mark.parametrize("path", ["/health", "/static/app.js"])
def test_index_refresh_middleware_alone(path: str) -> None:
    import asyncio

    state = FakeState()
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])

    mw = IndexRefreshMiddleware(app, state)  # type: ignore[arg-type]
    asyncio.run(mw({"type": "http", "path": path, "root_path": ""}, None, None))
    assert seen == [path] and state.checks == (0 if path.startswith("/static/") else 1)
    log = RequestLogMiddleware(app, state)  # type: ignore[arg-type]
    asyncio.run(log({"type": "http", "path": path, "root_path": "", "method": "GET"}, None, None))
    assert state.checks == (0 if path.startswith("/static/") else 1)  # the logger never checks the index


@pytest.mark.parametrize("path", SERVICE_MODULES, ids=lambda p: str(p.relative_to(HANDLER)))
def test_service_modules_leave_starlette_privates_alone(path: Path) -> None:
    source = path.read_text(encoding="utf-8")  # (module size: tests/test_module_size.py)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                assert not (
                    isinstance(target, ast.Attribute)
                    and target.attr.startswith("_")
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "request"
                ), f"{path.name}:{node.lineno} writes a private attribute of a request"
