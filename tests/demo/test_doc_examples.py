"""The README's and docs/api.md's examples work on the demo (issue 11, item 23).

Example ids and example image files must exist in the collection `make demo` writes (deterministic:
``demo.run``'s defaults through ``demo.shapes.write_collection``), ``make help`` must list every target, and
``make serve`` must not re-run the demo (a new index version) when its artifacts exist.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from demo import run, shapes
from index_builder.errors import BuildError, UsageError
from index_builder.sources import open_source

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "api.md"]
ITEM_ID = re.compile(r"(?<![\w/])(?:[\w-]+/)*img_\d+\.(?:jpg|png)")
FILE_ARG = re.compile(r"@([\w./-]+\.(?:jpg|jpeg|png))")


@pytest.fixture(scope="module")
def demo_images(tmp_path_factory) -> tuple[Path, Path]:
    """(images dir as the demo writes it, that dir relative to the repo root as the docs name it)."""
    defaults = run.build_parser().parse_args([])
    out = tmp_path_factory.mktemp("demo") / "images"
    shapes.write_collection(out, defaults.count, defaults.seed, size=128, fmt="jpg")
    return out, defaults.artifacts / "images"


def _doc_texts() -> dict[str, str]:
    return {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in DOCS}


def test_example_item_ids_exist_in_the_demo_index(demo_images):
    images, _ = demo_images
    ids = {
        (doc, m.group(0))
        for doc, text in _doc_texts().items()
        for m in ITEM_ID.finditer(text)
        if not m.group(0).startswith(("artifacts/", "/data/"))
    }  # files (below) and example server paths
    assert any(doc == "docs/api.md" for doc, _ in ids)
    missing = sorted((doc, i) for doc, i in ids if not (images / i).is_file())
    assert not missing, f"example ids that the demo index does not have: {missing}"


def test_example_image_files_are_demo_images(demo_images):
    images, rel = demo_images
    files = {(doc, m.group(1)) for doc, text in _doc_texts().items() for m in FILE_ARG.finditer(text)}
    assert {doc for doc, _ in files} == set(_doc_texts()), files  # README and api.md both upload an image
    bad = sorted(
        (doc, f)
        for doc, f in files
        if not Path(f).is_relative_to(rel) or not (images / Path(f).relative_to(rel)).is_file()
    )
    assert not bad, f"example files `make demo` does not write under {rel}: {bad}"


def test_example_metadata_matches_the_demo_sidecar(demo_images):
    images, _ = demo_images
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    m = re.search(r'\{"id": "([^"]+)", "uri": [^\n]+\n\s+"metadata": (\{[^}]*\})', text)
    item_id, metadata = m.group(1), json.loads(m.group(2))
    assert json.loads((images / item_id).with_suffix(".json").read_text()) == metadata


def test_api_doc_agrees_with_the_builder_on_http_items(tmp_path):
    text = " ".join((ROOT / "docs" / "api.md").read_text(encoding="utf-8").split())
    assert "items are passed through" not in text
    assert "refuses `http(s)://`" in text
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "uri": "https://example.com/a.jpg"}) + "\n")
    with pytest.raises(BuildError, match="unsupported uri"):
        open_source(str(manifest)).list()
    with pytest.raises(UsageError, match="unsupported scheme"):
        open_source("https://example.com/photos/")


def _make(*args: str, cwd: Path = ROOT) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    done = subprocess.run(
        ["make", "--no-print-directory", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_help_lists_every_target():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    phony = set(re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split()) - {"help"}
    listed = set(re.findall(r"^make ([\w-]+)", _make("-s", "help"), re.M))
    assert phony and not phony - listed, f"`make help` does not list: {sorted(phony - listed)}"
    assert not listed - phony, f"`make help` lists unknown targets: {sorted(listed - phony)}"


def test_make_serve_runs_the_demo_only_when_its_artifacts_are_missing(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").touch()  # newer than the requirement files: the set-up step is up to date
    demo = tmp_path / "artifacts" / "demo"
    args = ["-n", "serve", f"VENV={venv}", f"ARTIFACTS={tmp_path / 'artifacts'}"]
    first = _make(*args)
    assert "demo.run" in first and "handler.serve" in first  # nothing built yet: the demo runs first
    (demo / "bundle").mkdir(parents=True)
    (demo / "index").mkdir()
    (demo / "bundle" / "manifest.json").write_text("{}")
    (demo / "index" / "CURRENT").write_text("{}")
    again = _make(*args)
    assert "handler.serve" in again and "demo.run" not in again and "-m export" not in again
