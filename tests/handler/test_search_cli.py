"""Issue 17 #4: the terminal client (``python -m handler.search``): query parsing, local searches, --json,
--url against the app under uvicorn, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from handler.search import CliTerm, UsageError, main, parse_query
from tests.handler.conftest import make_settings, render_png
from tests.handler.test_app_hardening import uvicorn_server

ROOT = Path(__file__).resolve().parents[2]


def test_parse_query_operators_weights_and_images(tmp_path: Path) -> None:
    assert parse_query(["a beach", "+", "sunset", "-", "people"]) == [
        CliTerm("text", "a beach"),
        CliTerm("text", "sunset"),
        CliTerm("text", "people", -1.0),
    ]
    assert parse_query(["sunset:0.5", "-", "people:2", "time: 12", "ratio:1e-1"]) == [
        CliTerm("text", "sunset", 0.5),
        CliTerm("text", "people", -2.0),
        CliTerm("text", "time: 12"),  # not a weight: a space before the number
        CliTerm("text", "ratio", 0.1),
    ]
    photo = tmp_path / "cat.JPG"
    photo.write_bytes(b"x")
    odd = tmp_path / "odd:2.png"  # an existing file is never split at its colon
    odd.write_bytes(b"x")
    assert parse_query(
        [str(photo), "-", "at night:0.3", str(odd)], images=[f"{photo}:0.5"], ids=["a/b.jpg:2"]
    ) == [
        CliTerm("image", str(photo)),
        CliTerm("text", "at night", -0.3),
        CliTerm("image", str(odd)),
        CliTerm("image", str(photo), 0.5),
        CliTerm("id", "a/b.jpg", 2.0),
    ]
    assert parse_query(["missing.jpg"]) == [CliTerm("text", "missing.jpg")]  # not a file: a text


@pytest.mark.parametrize(
    ("tokens", "images", "needle"),
    [
        ([], [], "give a query"),
        (["a", "+", "-", "b"], [], "two operators"),
        (["a", "-"], [], "ends with an operator"),
        (["a:0", "b:0.0"], [], "all zero"),
        (["a:1e9"], [], "weight of 'a'"),
        (["+", " "], [], "empty"),
        (["a"] * 17, [], "at most 16 terms"),
        (["a"], ["/no/such/file.jpg"], "no such file"),
    ],
)
def test_parse_query_errors(tokens: list[str], images: list[str], needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        parse_query(tokens, images)


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def local(demo_index: tuple[Path, Path], demo_bundle: Path) -> list[str]:
    return ["--index", str(demo_index[0]), "--bundle", str(demo_bundle), "--threads", "2"]


def test_local_search_prints_ranked_paths(
    capsys: pytest.CaptureFixture[str], local: list[str], demo_index: tuple[Path, Path]
) -> None:
    rc, out, err = run(capsys, "a red circle", "-k", "3", *local)
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    scores = [float(line.split()[0]) for line in lines]
    assert scores == sorted(scores, reverse=True)
    for line in lines:
        path = Path(line.split(maxsplit=1)[1])
        assert path.is_file() and demo_index[1] in path.parents  # a path to open
        assert json.loads(path.with_suffix(".json").read_text())["caption"] == "a red circle"


def test_local_compound_query_json(
    capsys: pytest.CaptureFixture[str], local: list[str], tmp_path: Path
) -> None:
    image = tmp_path / "q.png"
    image.write_bytes(render_png("white", "square"))
    rc, out, err = run(capsys, "a red shape", "+", f"{image}:0.7", "--json", "-k", "30", "--dedupe", *local)
    assert rc == 0, err
    body = json.loads(out)  # exactly one JSON object
    assert [t["type"] for t in body["query"]["terms"]] == ["text", "image"]
    assert body["query"]["terms"][1]["path"] == str(image)
    results = body["results"]
    assert len(results) == 30 and all("duplicates" in r for r in results)
    labels = [(r["metadata"]["colour"], r["metadata"]["shape"]) for r in results]
    assert labels[:8] == [("red", "square")] * 8, labels  # like the API's text + image test


def test_local_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], local: list[str], tmp_path: Path
) -> None:
    rc, out, err = run(capsys, "--id", "no/such.jpg", *local)
    assert rc == 1 and out == "" and err.count("\n") == 1 and "no item with id 'no/such.jpg'" in err
    rc, out, err = run(capsys, "a", "+", "a:-1", *local)
    assert rc == 1 and "cancel out" in err and err.count("\n") == 1
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    rc, out, err = run(capsys, "--image", bad, *local)
    assert rc == 1 and err.startswith("error: term 1: ") and err.count("\n") == 1
    rc, out, err = run(capsys, "a", "--index", tmp_path, "--bundle", local[3])
    assert rc == 1 and "no index at" in err and err.count("\n") == 1
    rc, out, err = run(capsys, "a", "--dedupe", "1.5", *local)
    assert rc == 2 and "threshold" in err  # argparse: a usage error


def run_process(*argv: Any, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The client in its own process (the app's request log lines, printed in this one, stay apart)."""
    environ = {k: v for k, v in os.environ.items() if k != "API_KEY"}
    r = subprocess.run(
        [sys.executable, "-m", "handler.search", *map(str, argv)],
        cwd=ROOT,
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return r.returncode, r.stdout, r.stderr


def test_url_queries_the_service(
    capsys: pytest.CaptureFixture[str], demo_state: Any, local: list[str]
) -> None:
    from handler.app import create_app

    rc, out, err = run(capsys, "a red circle", "-", "a blue circle:0.5", "--json", "-k", "5", *local)
    assert rc == 0, err
    here = json.loads(out)
    with uvicorn_server(create_app(demo_state)) as url:
        rc, out, err = run_process(
            "a red circle", "-", "a blue circle:0.5", "--json", "-k", "5", "--url", url
        )
        assert rc == 0, err
        there = json.loads(out)
        assert [r["id"] for r in there["results"]] == [r["id"] for r in here["results"]]
        assert there["query"]["type"] == "terms" and there["query"]["terms"][1]["weight"] == -0.5
        rc, out, err = run_process("a red circle", "-k", "2", "--dedupe", "--url", url + "/")
        assert rc == 0 and len(out.splitlines()) == 2, err
        rc, out, err = run_process("--id", "no/such.jpg", "--url", url)
        assert rc == 1 and out == "" and err.count("\n") == 1
        assert "answered 404: unknown_id: 'terms'[0]: no item with id 'no/such.jpg'" in err
    rc, out, err = run_process("a", "--url", url, "--timeout", "5")  # the server is gone
    assert rc == 1 and "cannot query" in err and err.count("\n") == 1


def test_url_api_key(demo_bundle: Path, demo_index: tuple[Path, Path]) -> None:
    from handler.app import create_app
    from handler.state import ServiceState

    state = ServiceState(make_settings(demo_bundle, demo_index[0], API_KEY="s3cret")).load()
    with uvicorn_server(create_app(state)) as url:
        rc, _, err = run_process("a red circle", "--url", url)
        assert rc == 1 and "answered 401: unauthorized" in err and err.count("\n") == 1
        rc, out, err = run_process("a red circle", "-k", "1", "--url", url, "--api-key", "s3cret")
        assert rc == 0 and len(out.splitlines()) == 1, err
        rc, out, err = run_process("a red circle", "-k", "1", "--url", url, env={"API_KEY": "s3cret"})
        assert rc == 0 and len(out.splitlines()) == 1, err


def test_module_entry_point(local: list[str]) -> None:
    """``python -m handler.search`` in a fresh process (exit status, stdout); torch is never imported."""
    code = (
        "import os, runpy, sys\n"
        "sys.argv = ['handler.search', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('handler.search', run_name='__main__')\n"
        "except SystemExit as e:\n    rc = e.code\n"
        "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules\n"
        "sys.stdout.flush()\nos._exit(rc)"  # no interpreter teardown of onnxruntime sessions
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "a green star", "-k", "2", *local],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2


def test_local_filter(capsys: pytest.CaptureFixture[str], local: list[str]) -> None:
    """--filter takes the compact text form POST /search accepts; only matching items come back, k of them."""
    rc, out, err = run(capsys, "a red circle", "--filter", "meta.colour:blue", "-k", "12", "--json", *local)
    assert rc == 0, err
    results = json.loads(out)["results"]
    assert len(results) == 12 and {r["metadata"]["colour"] for r in results} == {"blue"}
    rc, out, err = run(capsys, "a red circle", "--filter", "colour:red", *local)
    assert rc == 1 and out == "" and err.count("\n") == 1 and "filter" in err
