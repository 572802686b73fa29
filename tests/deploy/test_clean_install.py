"""Clean install of the slim runtime: only requirements/handler.txt (pinned by constraints.txt, hnswlib built
with HNSWLIB_NO_NATIVE=1) in a fresh virtual environment - no torch, no open_clip, no dev tools - and
``handler/`` copied with a bundle and an index into a fresh directory, like the Lambda image's /var/task.
There it answers text and image searches through ``lambda_handler`` (HTTP API v2 events), and the rebuild
job (index_builder + tqdm, requirements/index_builder.txt) builds an index without torch.

The interpreter is CPython 3.12 when this machine has one (the Lambda image's python:3.12), else the running
one. One pip install per module (about a minute or two, packages from the registries).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from scripts import invoke
from scripts.footprint import deploy_footprint, dir_size
from tests.deploy.clean_venv import CleanVenv, create_clean_venv, pip, pip_install, venv_python
from tests.deploy.conftest import INDEX_VERSION, write_events

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "torch",
    "torchvision",
    "open-clip-torch",
    "open-clip",
    "onnx",
    "onnxscript",
    "tqdm",
    "pytest",
    "ruff",
    "httpx",
    "uvicorn",
    "matplotlib",
    "hypothesis",
    "selenium",
}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> CleanVenv:
    return create_clean_venv(tmp_path_factory.mktemp("clean-install"))


@pytest.fixture(scope="module")
def task_root(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path, deploy_index: Path) -> Path:
    """A fresh directory like the image's /var/task: handler/ only, plus a model and an index next to it."""
    root = tmp_path_factory.mktemp("task")
    shutil.copytree(
        ROOT / "handler",
        root / "handler",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "Dockerfile"),
    )
    shutil.copytree(tiny_bundle, root / "model")
    shutil.copytree(deploy_index, root / "index", ignore=shutil.ignore_patterns(".work"))
    return root


def lambda_env(model: Path | str, index: Path | str, cache: Path, **extra: str) -> dict[str, str]:
    """The template's environment (defaults) with local artifacts, and little else: no PYTHONPATH, no venv."""
    env, unresolved = invoke.template_environment(overrides={"ArtifactBucket": "example-bucket"})
    assert not unresolved
    env.update(MODEL_URI=str(model), INDEX_URI=str(index), CACHE_DIR=str(cache))
    env.update(
        {
            "PATH": "/usr/bin:/bin",
            "HOME": str(cache),
            "LANG": "C.UTF-8",
            "AWS_LAMBDA_FUNCTION_NAME": "SearchFunction",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    env.update(extra)
    return env


_SERVE = r"""
import importlib.util, json, sys, time, uuid
t0 = time.perf_counter()
from handler.lambda_function import lambda_handler
import handler
init_ms = (time.perf_counter() - t0) * 1000

class Context:
    function_name = "SearchFunction"
    memory_limit_in_mb = 3008
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:SearchFunction"
    def __init__(self):
        self.aws_request_id = str(uuid.uuid4())
    def get_remaining_time_in_millis(self):
        return 29000

responses = {}
for name, path in json.loads(sys.argv[1]).items():
    with open(path) as f:
        responses[name] = lambda_handler(json.load(f), Context())
print(json.dumps({
    "responses": responses, "init_ms": init_ms, "handler_file": handler.__file__,
    "loaded": sorted(m for m in ("torch", "open_clip", "torchvision", "tqdm") if m in sys.modules),
    "importable": sorted(m for m in ("torch", "open_clip", "torchvision") if importlib.util.find_spec(m)),
}))
"""


def serve(venv: CleanVenv, root: Path, env: dict[str, str], events: dict[str, Path]) -> dict[str, Any]:
    paths = json.dumps({k: str(v) for k, v in events.items()})
    result = venv_python(venv.python, "-c", _SERVE, paths, cwd=root, env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_only_the_handler_set_is_installed(clean_venv: CleanVenv) -> None:
    listing = pip(clean_venv.python, "list", "--format", "json")
    assert listing.returncode == 0, listing.stderr
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listing.stdout)}
    assert not installed & FORBIDDEN, installed & FORBIDDEN
    assert {"onnxruntime", "hnswlib", "numpy", "pillow", "fastapi", "mangum", "boto3"} <= installed
    for module in ("torch", "open_clip", "torchvision"):
        probe = venv_python(clean_venv.python, "-c", f"import {module}", cwd=clean_venv.path)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, module
    # hnswlib was compiled here (no wheel on PyPI) without -march=native, so it runs on any x86_64 host.
    probe = venv_python(
        clean_venv.python,
        "-c",
        "import hnswlib, numpy as np; i = hnswlib.Index('ip', 4); "
        "i.init_index(2); i.add_items(np.eye(2, 4, dtype='float32')); print(i.get_current_count())",
        cwd=clean_venv.path,
    )
    assert probe.stdout.strip() == "2", probe.stderr


def test_text_and_image_search_through_lambda_handler(
    clean_venv: CleanVenv, task_root: Path, query_image: bytes, tmp_path: Path
) -> None:
    events = write_events(tmp_path / "events", query_image)
    env = lambda_env(task_root / "model", task_root / "index", tmp_path / "cache")
    out = serve(
        clean_venv,
        task_root,
        env,
        {k: events[k] for k in ("health", "search-text", "search-image", "search-image-multipart", "info")},
    )
    assert Path(out["handler_file"]).resolve() == (task_root / "handler" / "__init__.py").resolve()
    assert out["loaded"] == [] and out["importable"] == []
    responses = out["responses"]
    for name, response in responses.items():
        assert response["statusCode"] == 200, (name, response)
    assert json.loads(responses["health"]["body"])["status"] == "ok"
    text = json.loads(responses["search-text"]["body"])
    assert text["query"]["type"] == "text" and len(text["results"]) == 3
    assert text["index_version"] == INDEX_VERSION
    for name in ("search-image", "search-image-multipart"):
        body = json.loads(responses[name]["body"])
        assert body["query"]["type"] == "image" and len(body["results"]) == 3
        assert body["results"][0]["score"] > 0.999, "the query image is in the index"
    info = json.loads(responses["info"]["body"])
    assert info["parameters"]["precision"] == "fp32" and info["index"]["count"] == 12


@pytest.fixture(scope="module")
def job_root(clean_venv: CleanVenv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like the job image's /var/task: handler/ + index_builder/, and tqdm (the only extra requirement of
    requirements/index_builder.txt) in ``site-extra/`` next to them, outside the clean venv."""
    root = tmp_path_factory.mktemp("job")
    result = pip_install(clean_venv.python, "--target", str(root / "site-extra"), "--no-deps", "tqdm")
    assert result.returncode == 0, result.stderr[-3000:]
    for package in ("handler", "index_builder"):
        shutil.copytree(
            ROOT / package,
            root / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "Dockerfile"),
        )
    return root


def run_job(venv: CleanVenv, root: Path, env: dict[str, str], event: dict[str, Any]) -> dict[str, Any]:
    """The rebuild state machine's steps in the clean venv: ``plan_handler(event)``, ``embed_handler`` over
    the whole todo list as one ItemBatcher batch, ``publish_handler(plan)``; returns a summary."""
    code = (
        "import sys, json; sys.path.insert(1, 'site-extra')\n"
        "from handler.core.storage import open_store\n"
        "from index_builder.sfn_handlers import embed_handler, plan_handler, publish_handler\n"
        "from index_builder.steps import work\n"
        f"plan = plan_handler({json.dumps(event)!r}, None)\n"
        "store = open_store(plan['index_uri'])\n"
        "items = json.loads(store.read_bytes(work.items_key(plan['run_id'])))\n"
        "embed_handler({'Items': items, 'BatchInput': {'run_id': plan['run_id']}}, None)\n"
        "out = publish_handler(plan, None)\n"
        "result = {'ok': out['published'], 'version': out['version'], 'index_uri': plan['index_uri']}\n"
        "print(json.dumps({'result': result, 'torch': 'torch' in sys.modules}))\n"
    )
    run = venv_python(venv.python, "-c", code, cwd=root, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["torch"] is False
    return out["result"]


def test_rebuild_job_runs_without_torch(
    clean_venv: CleanVenv,
    task_root: Path,
    job_root: Path,
    deploy_collection: Path,
    tmp_path: Path,
    query_image: bytes,
) -> None:
    """requirements/index_builder.txt = handler set + tqdm: the job image's set builds and publishes."""
    index = tmp_path / "built-index"
    env = lambda_env(
        task_root / "model",
        index,
        tmp_path / "cache",
        SOURCE_URI=str(deploy_collection),
        KEEP_VERSIONS="2",
        PRECISION="fp32",
        TQDM_DISABLE="1",
        XDG_CACHE_HOME=str(tmp_path / "xdg"),
    )
    out = {"result": run_job(clean_venv, job_root, env, {"full": True})}
    assert out["result"]["ok"] is True
    # ...and the search function serves what the job published
    events = write_events(tmp_path / "events", query_image)
    served = serve(
        clean_venv,
        task_root,
        lambda_env(task_root / "model", index, tmp_path / "cache"),
        {"search-image": events["search-image"]},
    )
    body = json.loads(served["responses"]["search-image"]["body"])
    assert body["index_version"] == out["result"]["version"]
    assert body["results"][0]["score"] > 0.999


def test_dependency_footprint(
    clean_venv: CleanVenv, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Installed size of the handler set (whole site-packages of the clean venv) vs the torch stack."""
    total = dir_size(clean_venv.site_packages)
    tooling = sum(dir_size(p) for p in clean_venv.site_packages.glob("pip*"))
    measured = deploy_footprint()  # the same two sets, from the installed RECORDs of this (dev) environment
    record = {
        "handler_site_packages_bytes": total,
        "handler_site_packages_without_pip_bytes": total - tooling,
        "handler_site_packages_mb": round(total / 1e6, 1),
        "clean_venv_python": clean_venv.version,
        "pip_install_seconds": round(clean_venv.install_seconds, 1),
        "dev_env_handler_deps_bytes": measured["handler_deps_bytes"],
        "dev_env_torch_stack_bytes": measured["torch_stack_bytes"],
        "dev_env_torch_stack_extra_bytes": measured["torch_stack_extra_bytes"],
        "torch_stack_over_handler": round(measured["torch_stack_bytes"] / max(1, total - tooling), 1),
    }
    path = tmp_path_factory.getbasetemp() / "deploy-footprint.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    with capsys.disabled():
        print(
            f"\n[deploy footprint] handler dependency set {(total - tooling) / 1e6:.1f} MB (+ pip "
            f"{tooling / 1e6:.1f} MB) in a clean Python {clean_venv.version} venv (pip install "
            f"{record['pip_install_seconds']} s); torch stack in this environment "
            f"{measured['torch_stack_mb']} MB "
            f"({record['torch_stack_over_handler']}x); written to {path}"
        )
    without_pip = total - tooling
    assert 50e6 < without_pip < 500e6
    # Two measurements of the same set (different Python minor versions possibly): within 25 %.
    assert abs(without_pip - measured["handler_deps_bytes"]) / measured["handler_deps_bytes"] < 0.25
    if "torch" not in measured["missing"]:
        assert measured["torch_stack_bytes"] > 2 * without_pip


@pytest.mark.s3
def test_deployed_configuration_against_s3(
    clean_venv: CleanVenv,
    task_root: Path,
    job_root: Path,
    s3_server: Any,
    tiny_bundle: Path,
    deploy_collection: Path,
    query_image: bytes,
    tmp_path: Path,
) -> None:
    """The template's default configuration, with S3 (SeaweedFS) standing in for the artifact bucket: the
    rebuild job builds from s3://<bucket>/collection with the bundle at s3://<bucket>/models/clip into
    s3://<bucket>/indexes/clip writing nothing outside that prefix (what its IAM policy allows), and the
    search function fetches bundle and index from S3 at cold start and serves the published version."""
    bucket = s3_server.make_bucket()
    client = s3_server.client()
    for path in sorted(p for p in tiny_bundle.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"models/clip/{path.relative_to(tiny_bundle).as_posix()}")
    for path in sorted(p for p in deploy_collection.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"collection/{path.relative_to(deploy_collection).as_posix()}")

    def keys() -> set[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    before = keys()
    job_env, unresolved = invoke.template_environment(
        function="PlanFunction", overrides={"ArtifactBucket": bucket}
    )
    assert not unresolved
    assert job_env["INDEX_URI"] == f"s3://{bucket}/indexes/clip"
    job_env.update(
        s3_server.env(),
        PATH="/usr/bin:/bin",
        HOME=str(tmp_path),
        LANG="C.UTF-8",
        CACHE_DIR=str(tmp_path / "job-cache"),
        XDG_CACHE_HOME=str(tmp_path / "job-xdg"),
    )
    result = run_job(clean_venv, job_root, job_env, {})
    assert result["ok"] is True and result["index_uri"] == f"s3://{bucket}/indexes/clip"
    written = keys() - before
    assert written and all(k.startswith("indexes/clip/") for k in written), sorted(written)
    assert before <= keys(), "the job deleted nothing outside its prefix"

    env = lambda_env(
        f"s3://{bucket}/models/clip", f"s3://{bucket}/indexes/clip", tmp_path / "cache", **s3_server.env()
    )
    events = write_events(tmp_path / "events", query_image)
    served = serve(
        clean_venv, task_root, env, {k: events[k] for k in ("health", "search-text", "search-image")}
    )
    responses = served["responses"]
    assert [r["statusCode"] for r in responses.values()] == [200, 200, 200], responses
    body = json.loads(responses["search-image"]["body"])
    assert body["index_version"] == result["version"]
    assert body["results"][0]["score"] > 0.999
    assert len(json.loads(responses["search-text"]["body"])["results"]) == 3
    assert keys() - before == written, "the search function writes nothing to S3"
    assert any((tmp_path / "cache").rglob("textual.onnx")), "the bundle was cached under CACHE_DIR"
