"""pyproject.toml agrees with requirements/*.txt (the pinned install path), the version lives in one place,
and the console scripts point at real entry points."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from handler.core import __version__

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].strip().lower().replace("_", "-") for r in reqs}


def _requirements(name: str) -> list[str]:
    """The requirement lines of requirements/<name>.txt, following -r includes."""
    out: list[str] = []
    for line in (ROOT / "requirements" / name).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            out += _requirements(line[3:].strip())
        elif line and not line.startswith("-"):
            out.append(line)
    return out


@pytest.mark.parametrize(
    ("extra", "files"),
    [
        (None, ["handler.txt", "handler-nodeps.txt"]),
        ("index-builder", ["index_builder.txt"]),
        ("export", ["export.txt", "torch.txt"]),
        ("dev", ["dev.txt", "torch.txt"]),
    ],
)
def test_pyproject_declares_what_the_requirement_files_install(extra: str | None, files: list[str]) -> None:
    declared = PROJECT["dependencies"] + (PROJECT["optional-dependencies"][extra] if extra else [])
    if extra == "dev":
        declared += PROJECT["optional-dependencies"]["export"]
    wanted = _names([r for f in files for r in _requirements(f)])
    assert _names(declared) == wanted | _names(PROJECT["dependencies"])


def test_every_requirement_is_pinned_and_cuda_stays_out_of_the_default_pins() -> None:
    pins = {
        re.split("==", line)[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    names = _names(_requirements("dev.txt"))
    assert not names - pins, f"unpinned in constraints.txt: {sorted(names - pins)}"
    assert not {p for p in pins if p.startswith(("nvidia-", "cuda-", "triton", "torch"))}
    torch = _requirements("torch.txt")
    assert {r for r in PROJECT["optional-dependencies"]["export"] if r.startswith("torch")} == set(torch)


def test_the_version_lives_in_one_place() -> None:
    assert "version" not in PROJECT and PROJECT["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "handler.core.__version__"}
    from handler import __version__ as service_version
    from index_builder.version_write import BUILDER

    assert service_version == __version__ and f"index_builder {__version__}" == BUILDER
    hits = [
        str(p.relative_to(ROOT))
        for pkg in ("handler", "export", "index_builder")
        for p in (ROOT / pkg).rglob("*.py")
        if re.search(r"\b\d+\.\d+\.\d+\b['\"]", p.read_text()) and __version__ in p.read_text()
    ]
    assert hits == ["handler/core/__init__.py"]


@pytest.mark.parametrize("script", ["clip-export", "clip-index", "clip-serve", "clip-search"])
def test_console_scripts_name_real_main_functions(script: str) -> None:
    module, _, func = PROJECT["scripts"][script].partition(":")
    assert callable(getattr(importlib.import_module(module), func))


def test_make_test_fast_installs_nothing_beyond_the_venv(tmp_path: Path) -> None:
    """The edit-loop tier: no SAM virtualenv, no apt, the `slow` marker deselected; `make test` keeps them."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").write_text("cpu\n")  # an up-to-date CPU set-up
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}

    def dry(target: str) -> str:
        done = subprocess.run(
            ["make", "--no-print-directory", "-n", target, f"VENV={venv}", f"SAM_VENV={tmp_path / 'sam'}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    fast, full = dry("test-fast"), dry("test")
    assert '-m pytest -m "not slow"' in fast
    assert "pip install" not in fast and "install_sam" not in fast and "apt-get" not in fast
    assert "install_sam" in full and "apt-get" in full and '"not slow"' not in full
