"""Helpers for the index builder tests: run the CLI in-process, read what a build published."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from demo.shapes import write_collection
from handler.core.index_format import read_pointer, version_prefix
from handler.core.storage import open_store

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class CliResult:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``cli("build", "--source", ...)``: ``index_builder.cli.main`` in-process, output captured."""
    from index_builder.cli import main

    def run(*args: Any) -> CliResult:
        capsys.readouterr()
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse usage errors
            rc = e.code if isinstance(e.code, int) else 2
        out, err = capsys.readouterr()
        return CliResult(int(rc), out, err)

    return run


def build_args(source: Any, bundle: Any, out: Any, *extra: Any) -> list[str]:
    return [
        "build",
        "--source",
        str(source),
        "--bundle",
        str(bundle),
        "--out",
        str(out),
        "--quiet",
        *map(str, extra),
    ]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def cli_command(*args: Any) -> list[str]:
    return [sys.executable, "-m", "index_builder", *map(str, args)]


def collection(path: Path, n: int, seed: int = 0, size: int = 64, fmt: str = "jpg") -> list[Path]:
    """A demo collection (images + sidecars) spread over sub-folders."""
    return write_collection(path, n, seed, size=size, fmt=fmt)


def ids_of(paths: list[Path], root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in paths}


def current(dest: Any) -> str | None:
    pointer = read_pointer(open_store(str(dest)))
    return pointer["version"] if pointer else None


def read_version(dest: Any, version: str | None = None) -> dict[str, Any]:
    """manifest, items, embeddings and errors of a version (default: the current one)."""
    store = open_store(str(dest))
    version = version or current(dest)
    assert version is not None, f"no published version at {dest}"
    prefix = version_prefix(version)
    manifest = json.loads(store.read_bytes(prefix + "manifest.json"))
    errors = [
        json.loads(line) for line in store.read_bytes(prefix + "errors.jsonl").decode().splitlines() if line
    ]
    import io

    from handler.core.index_format import shard_specs

    items: list[Any] = []
    parts = [np.zeros((0, manifest["dim"]), np.float32)]
    for spec in shard_specs(manifest):  # live rows of every shard, in label order
        rows = [
            json.loads(line)
            for line in store.read_bytes(spec.files["items"]["key"]).decode().splitlines()
            if line
        ]
        emb = np.load(io.BytesIO(store.read_bytes(spec.files["embeddings"]["key"])), allow_pickle=False)
        live = [i for i in range(len(rows)) if i not in set(spec.deleted)]
        items += [rows[i] for i in live]
        parts.append(emb[live])
    emb = np.concatenate(parts)
    return {"version": version, "manifest": manifest, "items": items, "errors": errors, "embeddings": emb}


def vectors_by_id(version: dict[str, Any]) -> dict[Any, np.ndarray]:
    return {row["id"]: version["embeddings"][i] for i, row in enumerate(version["items"])}


def copy_bundle_with_fingerprint(bundle: Path, dest: Path, fingerprint: str) -> Path:
    """A copy of ``bundle`` claiming another model fingerprint (same ONNX files: loads fine)."""
    shutil.copytree(bundle, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["model_fingerprint"] = fingerprint
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest
