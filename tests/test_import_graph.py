"""The package picture is one-way (issue 12 #1): handler.core <- export, index_builder, the service; nothing in
the shipped packages imports the service, the demo, the benchmarks or the sample events.

Allowed edges, by importing package (anything else from this repository is a violation):

* ``handler.core``: only ``handler.core``
* ``handler`` (the service): ``handler``
* ``export``, ``index_builder``: ``handler.core`` and themselves (never demo, bench, events, the service,
  or each other)
* ``events``: ``events``, ``demo`` (the sample image)
* ``demo`` (the demo driver): anything but ``bench``; ``bench``, ``scripts``: anything
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("handler", "export", "index_builder", "demo", "bench", "events", "scripts")


def _group(module: str) -> str:
    top = module.split(".")[0]
    if top == "handler":
        return "handler.core" if module == "handler.core" or module.startswith("handler.core.") else "handler"
    return top


ALLOWED = {
    "handler.core": {"handler.core"},
    "handler": {"handler", "handler.core"},
    "export": {"export", "handler.core"},
    "index_builder": {"index_builder", "handler.core"},
    "events": {"events", "demo"},
    "demo": {"demo", "handler", "handler.core", "export", "index_builder", "events"},
}


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            if node.module == "handler":  # from handler import core / app
                out += [f"handler.{a.name}" for a in node.names]
    return [m for m in out if m.split(".")[0] in PACKAGES]


def violations() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            source = _group(".".join(rel.with_suffix("").parts))
            allowed = ALLOWED.get(source)
            if allowed is None:
                continue
            found += [f"{rel}: imports {m}" for m in _imports(path) if _group(m) not in allowed]
    return found


def test_the_package_graph_is_one_way() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    ("module", "imported", "ok"),
    [
        ("index_builder/x.py", "demo", False),
        ("index_builder/x.py", "bench.common", False),
        ("index_builder/x.py", "export.cli", False),
        ("index_builder/x.py", "handler.app", False),
        ("handler/core/x.py", "handler.logs", False),
        ("export/x.py", "handler.core.bundle", True),
    ],
)
def test_the_checker_catches_a_back_edge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, imported: str, ok: bool
) -> None:
    path = tmp_path / module
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"import {imported}\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert (violations() == []) is ok


if __name__ == "__main__":  # python tests/test_import_graph.py
    problems = violations()
    print("\n".join(problems) or "the package graph is one-way")
    raise SystemExit(1 if problems else 0)
