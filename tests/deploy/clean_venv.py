"""A clean virtual environment with only the slim runtime's requirements (pinned by constraints.txt, hnswlib
built with HNSWLIB_NO_NATIVE=1), and the pip / python calls the clean-install tests make in it."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints.txt"


def lambda_python() -> str:
    """CPython 3.12 (as in public.ecr.aws/lambda/python:3.12) with venv, else this interpreter."""
    home = os.path.expanduser("~")
    candidates = [
        shutil.which("python3.12"),
        *sorted(glob.glob(f"{home}/.pyenv/versions/3.12*/bin/python3.12")),
        *sorted(glob.glob("/root/.pyenv/versions/3.12*/bin/python3.12")),
        "/usr/bin/python3.12",
        "/usr/local/bin/python3.12",
    ]
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys, venv, ensurepip; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 12)":
            return candidate
    return getattr(sys, "_base_executable", sys.executable)


def pip_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }
    env.update(HNSWLIB_NO_NATIVE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def pip(
    python: Path, *args: str, timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m pip *args`` in the clean pip environment, output captured."""
    return subprocess.run(
        [str(python), "-m", "pip", *args],
        env=pip_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def pip_install(
    python: Path, *args: str, timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``pip install *args`` pinned by constraints.txt, never prompting."""
    return pip(python, "install", "--no-input", "-c", str(CONSTRAINTS), *args, timeout=timeout, cwd=cwd)


def venv_python(
    python: Path, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -E -s *args``: no PYTHON* variables, no user site, only the venv's packages."""
    return subprocess.run(
        [str(python), "-E", "-s", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@dataclass
class CleanVenv:
    path: Path
    python: Path
    site_packages: Path
    base_python: str
    version: str
    install_seconds: float


def create_clean_venv(base: Path) -> CleanVenv:
    """A fresh venv under ``base`` with the handler set (requirements/handler.txt + handler-nodeps.txt)."""
    base_python = lambda_python()
    venv = base / "venv"
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    python = venv / "bin" / "python"
    t0 = time.monotonic()
    result = pip_install(python, "-r", str(ROOT / "requirements" / "handler.txt"), timeout=1500, cwd=base)
    if result.returncode == 0:
        nodeps = ROOT / "requirements" / "handler-nodeps.txt"
        result = pip_install(python, "--no-deps", "-r", str(nodeps), cwd=base)
    seconds = time.monotonic() - t0
    if result.returncode != 0:
        pytest.fail(
            f"pip install -r requirements/handler.txt failed in a clean venv ({base_python}):\n"
            f"{(result.stdout + result.stderr)[-6000:]}",
            pytrace=False,
        )
    info = subprocess.run(
        [
            str(python),
            "-c",
            "import sys, sysconfig; print(sysconfig.get_paths()['purelib']); "
            "print('%d.%d.%d' % sys.version_info[:3])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    site, version = info.stdout.split()
    return CleanVenv(venv, python, Path(site), base_python, version, seconds)
