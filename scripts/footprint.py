"""Deployment footprint: the Lambda runtime's dependency set vs the PyTorch stack it replaces.

    from scripts.footprint import deploy_footprint
    deploy_footprint()        # measured in the running interpreter's environment (.venv)

    python scripts/footprint.py [--json] [--site-packages DIR]

Sizes are the bytes on disk of the files each installed distribution lists in its RECORD (what pip
installed), summed over the dependency closure of:

* handler: the requirements in requirements/handler.txt (what the Lambda image installs);
* torch stack: torch, torchvision, open_clip_torch (what serving the PyTorch model would need);
  ``torch_stack_extra_bytes`` counts only the packages of that closure that the handler set does not have.

tests/deploy/test_clean_install.py measures the handler set a second way: a fresh virtual environment with
only requirements/handler.txt, whole site-packages summed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HANDLER_REQUIREMENTS = ROOT / "requirements" / "handler.txt"
HANDLER_NODEPS = ROOT / "requirements" / "handler-nodeps.txt"  # installed with --no-deps: no closure
TORCH_STACK = ("torch", "torchvision", "open_clip_torch")

__all__ = ["closure", "deploy_footprint", "dir_size", "normalize", "requirement_names"]


def normalize(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(path: str | os.PathLike[str] = HANDLER_REQUIREMENTS) -> list[str]:
    """Distribution names listed in a requirements file (following ``-r`` includes; no versions)."""
    path = Path(path)
    names: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            names += requirement_names(path.parent / line.split(None, 1)[1])
            continue
        if line.startswith("-"):
            continue
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match:
            names.append(match.group(1))
    return names


def _distributions(site_packages: Iterable[str] | None) -> dict[str, metadata.Distribution]:
    dists = metadata.distributions(path=list(site_packages)) if site_packages else metadata.distributions()
    found: dict[str, metadata.Distribution] = {}
    for dist in dists:
        name = dist.metadata.get("Name")
        if name and normalize(name) not in found:
            found[normalize(name)] = dist
    return found


def _requires(dist: metadata.Distribution) -> list[str]:
    """Names of ``dist``'s unconditional requirements under this interpreter's markers (no extras)."""
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for spec in dist.requires or ():
        try:
            req = Requirement(spec)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        out.append(normalize(req.name))
    return out


def closure(roots: Iterable[str], dists: Mapping[str, metadata.Distribution]) -> tuple[set[str], set[str]]:
    """``(installed, missing)``: the dependency closure of ``roots`` among ``dists``."""
    seen: set[str] = set()
    missing: set[str] = set()
    todo = [normalize(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen or name in missing:
            continue
        dist = dists.get(name)
        if dist is None:
            missing.add(name)
            continue
        seen.add(name)
        todo.extend(_requires(dist))
    return seen, missing


def _dist_files(dist: metadata.Distribution) -> set[Path]:
    files = set()
    for f in dist.files or ():
        path = Path(dist.locate_file(f))
        try:
            files.add(path.resolve())
        except OSError:
            continue
    return files


def _size(paths: Iterable[Path]) -> int:
    total = 0
    for p in paths:
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def dir_size(path: str | os.PathLike[str]) -> int:
    """Bytes of all regular files under ``path`` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def _measure(names: set[str], dists: Mapping[str, metadata.Distribution]) -> tuple[int, dict[str, int]]:
    per = {}
    every: set[Path] = set()
    for name in sorted(names):
        files = _dist_files(dists[name])
        per[name] = _size(files)
        every |= files
    return _size(every), per


def deploy_footprint(
    site_packages: Iterable[str] | None = None,
    handler_requirements: str | os.PathLike[str] = HANDLER_REQUIREMENTS,
) -> dict[str, Any]:
    """Sizes in bytes of (a) the handler's dependency set and (b) the torch stack, measured in the
    environment whose ``site_packages`` are given (default: the running interpreter's).

    Returns ``handler_deps_bytes``, ``handler_packages`` ({name: bytes}), ``torch_stack_bytes`` (torch +
    torchvision + open_clip_torch and all their dependencies), ``torch_stack_extra_bytes`` (the part not
    shared with the handler set), ``torch_stack_packages``, ``ratio`` (torch stack / handler set),
    ``missing`` (requirements not installed there), ``python`` and ``method``."""
    dists = _distributions(site_packages)
    handler_names, handler_missing = closure(requirement_names(handler_requirements), dists)
    if Path(handler_requirements) == HANDLER_REQUIREMENTS and HANDLER_NODEPS.is_file():
        nodeps = {normalize(n) for n in requirement_names(HANDLER_NODEPS)}
        handler_names |= nodeps & set(dists)
        handler_missing |= nodeps - set(dists)
    torch_names, torch_missing = closure(TORCH_STACK, dists)
    handler_bytes, handler_per = _measure(handler_names, dists)
    torch_bytes, torch_per = _measure(torch_names, dists)
    extra_bytes, _ = _measure(torch_names - handler_names, dists)
    return {
        "handler_deps_bytes": handler_bytes,
        "handler_deps_mb": round(handler_bytes / 1e6, 1),
        "handler_packages": handler_per,
        "torch_stack_bytes": torch_bytes,
        "torch_stack_mb": round(torch_bytes / 1e6, 1),
        "torch_stack_extra_bytes": extra_bytes,
        "torch_stack_packages": torch_per,
        "ratio": round(torch_bytes / handler_bytes, 1) if handler_bytes else None,
        "missing": sorted(handler_missing | torch_missing),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "site_packages": list(site_packages) if site_packages else "running interpreter",
        "method": "sum of RECORD files of each distribution in the dependency closure",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="handler dependency set vs torch stack, bytes on disk")
    parser.add_argument("--site-packages", action="append", help="measure this site-packages (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = parser.parse_args(argv)
    result = deploy_footprint(args.site_packages)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"handler dependency set: {result['handler_deps_mb']:8.1f} MB  "
        f"({len(result['handler_packages'])} packages)"
    )
    print(
        f"torch stack:            {result['torch_stack_mb']:8.1f} MB  ({len(result['torch_stack_packages'])} "
        f"packages, {result['torch_stack_extra_bytes'] / 1e6:.1f} MB not shared with the handler)"
    )
    if result["missing"]:
        print(f"not installed here: {', '.join(result['missing'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
