"""scripts/invoke.py (``make invoke EVENT=...``): environment from the template, path choice, both paths.

Here (no container runtime) the subprocess path really runs ``lambda_handler`` on a small index; the sam path
is exercised with stand-in ``docker`` and ``sam`` executables that record what they were asked to do.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scripts import invoke
from tests.deploy.conftest import INDEX_VERSION

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "invoke.py"


def run_invoke(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def parse_output(stdout: str) -> tuple[str, dict[str, Any], str]:
    """(path line, response as sam prints it, the readable rest)."""
    first, response, *rest = stdout.splitlines()
    return first, json.loads(response), "\n".join(rest)


def artifact_env(bundle: Path, index: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in invoke.CONFIG_NAMES}
    env.update(MODEL_URI=str(bundle), INDEX_URI=str(index), **extra)
    return env


def no_container_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """PATH with a ``docker`` whose ``info`` fails first, as on a machine without a daemon."""
    fake = tmp_path / "no-daemon-bin"
    fake.mkdir(exist_ok=True)
    _script(
        fake / "docker",
        "import sys\nprint('Cannot connect to the Docker daemon', file=sys.stderr)\nsys.exit(1)\n",
    )
    return {**env, "PATH": f"{fake}{os.pathsep}{env.get('PATH', '')}"}


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# ---------------------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------------------
def test_template_environment_resolves_parameters() -> None:
    resolved, unresolved = invoke.template_environment()
    assert set(resolved) | set(unresolved) == set(invoke.config_names())
    assert set(unresolved) == {"MODEL_URI", "INDEX_URI"}  # ArtifactBucket has no default
    assert unresolved["INDEX_URI"] == "s3://<ArtifactBucket>/indexes/clip"
    assert resolved["PRECISION"] == "fp32" and resolved["INDEX_REFRESH_SECONDS"] == "60"
    assert resolved["API_KEY"] == "" and resolved["ORT_THREADS"] == ""
    resolved, unresolved = invoke.template_environment(
        overrides={"ArtifactBucket": "bkt", "Precision": "int8"}
    )
    assert unresolved == {}
    assert resolved["MODEL_URI"] == "s3://bkt/models/clip" and resolved["PRECISION"] == "int8"
    with pytest.raises(ValueError, match="unknown template parameter"):
        invoke.template_environment(overrides={"NoSuchParameter": "1"})
    assert invoke.template_function_settings() == {"MemorySize": 3008, "Timeout": 29}


def test_resolver_intrinsics() -> None:
    template = {
        "Parameters": {
            "A": {"Type": "String", "Default": "x"},
            "N": {"Type": "Number", "Default": 3},
            "Flag": {"Type": "String", "Default": "true"},
        },
        "Conditions": {
            "On": {"Fn::Equals": [{"Ref": "Flag"}, "true"]},
            "Off": {"Fn::Not": [{"Condition": "On"}]},
            "Both": {"Fn::And": [{"Condition": "On"}, {"Fn::Or": [{"Condition": "Off"}, True]}]},
        },
    }
    r = invoke.Resolver(template)
    assert r.resolve({"Fn::Sub": "${A}-${N}-${AWS::Region}-${!Literal}"}).startswith("x-3-")
    assert r.resolve({"Fn::Sub": "${A}-${!Literal}"}) == "x-${Literal}"
    assert r.resolve({"Fn::Sub": ["${A}/${B}", {"B": "y"}]}) == "x/y"
    assert r.resolve({"Fn::If": ["Off", "a", "b"]}) == "b"
    assert r.resolve({"Fn::If": ["Both", "a", "b"]}) == "a"
    assert r.resolve({"Fn::Join": ["/", ["a", {"Ref": "A"}]]}) == "a/x"
    assert isinstance(r.resolve({"Fn::GetAtt": ["Res", "Arn"]}), invoke.Unresolved)
    assert isinstance(r.resolve({"Fn::Sub": "${Res.Arn}"}), invoke.Unresolved)
    assert r.resolve([{"Ref": "AWS::NoValue"}, "k"]) == ["k"]


def test_function_environment_defaults_and_caller_overrides() -> None:
    env, notes = invoke.function_environment(environ={})
    assert env["MODEL_URI"] == str(invoke.DEMO_MODEL) and env["INDEX_URI"] == str(invoke.DEMO_INDEX)
    assert env["PRECISION"] == "fp32" and env["CACHE_DIR"] == "/tmp/clip-search"
    env, notes = invoke.function_environment(
        environ={"MODEL_URI": "s3://b/m", "LOG_LEVEL": "DEBUG"}, params={"Precision": "int8"}
    )
    assert env["MODEL_URI"] == "s3://b/m" and env["INDEX_URI"] == str(invoke.DEMO_INDEX)
    assert env["LOG_LEVEL"] == "DEBUG" and env["PRECISION"] == "int8"
    assert any("LOG_LEVEL from the caller" in n for n in notes)
    env, _ = invoke.function_environment(from_template=False, environ={})
    assert set(env) == {"MODEL_URI", "INDEX_URI"}


def test_path_choice_without_a_container_runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", no_container_env(dict(os.environ), tmp_path)["PATH"])
    assert invoke.container_runtime()[0] is False
    assert invoke.choose_path({"MODEL_URI": "s3://b/m"}, "auto") == ("subprocess", invoke.NO_RUNTIME_LINE)
    with pytest.raises(invoke.UsageError, match="no container runtime"):
        invoke.choose_path({}, "sam")


# ---------------------------------------------------------------------------------------------------------
# the subprocess path, for real
# ---------------------------------------------------------------------------------------------------------
def test_subprocess_path_answers_text_and_image_searches(
    tiny_bundle: Path, deploy_index: Path, event_files: dict[str, Path], tmp_path: Path
) -> None:
    env = no_container_env(artifact_env(tiny_bundle, deploy_index), tmp_path)
    for name in ("search-text", "search-image", "search-image-multipart"):
        result = run_invoke(str(event_files[name]), "--env-from-template", "--expect-status", "200", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        first, response, readable = parse_output(result.stdout)
        assert first == "no container runtime: ran lambda_handler in a subprocess"
        assert set(response) >= {"statusCode", "headers", "body"}  # the shape sam local invoke prints
        assert response["statusCode"] == 200
        body = json.loads(response["body"])
        assert len(body["results"]) == 3, name
        assert body["index_version"] == INDEX_VERSION
        assert readable.startswith("statusCode: 200\nheaders:")
        assert '"results": [' in readable  # the parsed, indented body
        assert "REPORT RequestId:" in result.stderr and "Init Duration:" in result.stderr
        if name != "search-text":
            assert body["query"]["type"] == "image"
            assert body["results"][0]["score"] > 0.999, "the query image is in the collection"


def test_template_parameters_reach_the_function(
    tiny_bundle: Path, deploy_index: Path, event_files: dict[str, Path], tmp_path: Path
) -> None:
    env = no_container_env(artifact_env(tiny_bundle, deploy_index), tmp_path)
    out = tmp_path / "response.json"
    result = run_invoke(
        str(event_files["info"]),
        "--param",
        "Precision=int8",
        "--param",
        "ModelId=deploy-test",
        "--param",
        "IndexRefreshSeconds=7",
        "--output",
        str(out),
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    info = json.loads(json.loads(out.read_text())["body"])
    assert info["index"]["version"] == INDEX_VERSION
    params = info["parameters"]
    assert params["precision"] == "int8" and params["model_id"] == "deploy-test"
    assert params["index_refresh_seconds"] == 7
    assert params["max_image_bytes"] == 4_500_000 and params["api_key_required"] is False
    # the caller's environment wins over the template
    env["PRECISION"] = "fp32"
    result = run_invoke(str(event_files["info"]), "--param", "Precision=int8", "--output", str(out), env=env)
    assert json.loads(json.loads(out.read_text())["body"])["parameters"]["precision"] == "fp32"


def test_usage_errors(tmp_path: Path, event_files: dict[str, Path]) -> None:
    env = artifact_env(tmp_path / "missing-bundle", tmp_path / "missing-index")
    result = run_invoke(str(event_files["health"]), env=env)
    assert result.returncode == 2 and "does not exist" in result.stderr
    result = run_invoke(str(tmp_path / "nope.json"), env=env)
    assert result.returncode == 2 and "no such event file" in result.stderr
    result = run_invoke(str(event_files["health"]), "--param", "Bogus=1", env=env)
    assert result.returncode == 2 and "unknown template parameter" in result.stderr


def test_expect_status_mismatch_fails(
    tiny_bundle: Path, deploy_index: Path, event_files: dict[str, Path], tmp_path: Path
) -> None:
    env = no_container_env(artifact_env(tiny_bundle, deploy_index), tmp_path)
    result = run_invoke(str(event_files["health"]), "--expect-status", "201", "--mode", "subprocess", env=env)
    assert result.returncode == 1 and "statusCode 200 != expected 201" in result.stderr
    assert result.stdout.splitlines()[0] == "subprocess requested: ran lambda_handler in a subprocess"


# ---------------------------------------------------------------------------------------------------------
# the sam path, with stand-ins for docker and sam
# ---------------------------------------------------------------------------------------------------------
FAKE_SAM = r"""
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_SAM_RECORD"], "a") as f:
    entry = {"args": args}
    if "--env-vars" in args:
        entry["env_vars"] = json.load(open(args[args.index("--env-vars") + 1]))
    if "--event" in args:
        entry["event"] = json.load(open(args[args.index("--event") + 1]))
    f.write(json.dumps(entry) + "\n")
print("Invoking Container created from searchfunction:search", file=sys.stderr)
print('START RequestId: 1 Version: $LATEST\nEND RequestId: 1')
print(json.dumps({"statusCode": 200, "headers": {"content-type": "application/json"},
                  "body": json.dumps({"status": "ok", "via": "sam"}), "isBase64Encoded": False}))
"""


@pytest.fixture
def fake_container(tmp_path: Path) -> tuple[dict[str, str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "docker", "import sys\nsys.exit(0)\n")
    sam = _script(bin_dir / "sam", FAKE_SAM)
    record = tmp_path / "sam-calls.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in invoke.CONFIG_NAMES}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", SAM_CLI=str(sam), FAKE_SAM_RECORD=str(record)
    )
    return env, record


def test_sam_path_when_a_container_runtime_answers(
    fake_container: tuple[dict[str, str], Path], event_files: dict[str, Path]
) -> None:
    env, record = fake_container
    env.update(MODEL_URI="s3://artifacts/models/clip", INDEX_URI="s3://artifacts/indexes/clip")
    result = run_invoke(str(event_files["health"]), "--no-build", "--param", "Precision=int8", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    first, response, _ = parse_output(result.stdout)
    assert first == "ran with sam local invoke"
    assert json.loads(response["body"]) == {"status": "ok", "via": "sam"}
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(calls) == 1
    args = calls[0]["args"]
    assert args[:3] == ["local", "invoke", "SearchFunction"]
    assert calls[0]["event"] == json.loads(event_files["health"].read_text())
    assert (
        "--parameter-overrides" in args and "Precision=int8" in args[args.index("--parameter-overrides") + 1]
    )
    variables = calls[0]["env_vars"]["SearchFunction"]
    assert set(variables) == set(invoke.config_names())
    assert variables["MODEL_URI"] == "s3://artifacts/models/clip" and variables["PRECISION"] == "int8"
    assert "Invoking Container" in result.stderr  # sam's own log passes through


def test_local_artifacts_fall_back_to_the_subprocess(
    fake_container: tuple[dict[str, str], Path],
    tiny_bundle: Path,
    deploy_index: Path,
    event_files: dict[str, Path],
) -> None:
    """A container cannot read local paths: with a runtime present, local MODEL_URI/INDEX_URI still run in
    the subprocess, and the first line says why."""
    env, record = fake_container
    env.update(MODEL_URI=str(tiny_bundle), INDEX_URI=str(deploy_index))
    result = run_invoke(str(event_files["health"]), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    first, response, _ = parse_output(result.stdout)
    assert first.startswith("container runtime present but MODEL_URI=")
    assert first.endswith(": ran lambda_handler in a subprocess")
    assert response["statusCode"] == 200
    assert not record.exists()
    result = run_invoke(str(event_files["health"]), "--mode", "sam", env=env)
    assert result.returncode == 2 and "not readable inside the container" in result.stderr


SAMPLE_EVENTS = (
    "search-text.json",
    "search-image.json",
    "search-text-v1.json",
    "search-image-function-url.json",
    "embeddings.json",
)


@pytest.mark.parametrize("name", SAMPLE_EVENTS)
def test_committed_sample_events(name: str, tiny_bundle: Path, deploy_index: Path, tmp_path: Path) -> None:
    """``make invoke EVENT=events/<name>`` works for the sample events (HTTP API v2, REST v1, function URL)."""
    event = ROOT / "events" / name
    if not event.is_file():
        pytest.skip(f"{event} is not in this checkout")
    env = no_container_env(artifact_env(tiny_bundle, deploy_index), tmp_path)
    result = run_invoke(str(event), "--expect-status", "200", env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    _, response, _ = parse_output(result.stdout)
    body = json.loads(response["body"])
    assert body.get("results") or body.get("text_embeddings") or body.get("image_embeddings"), body
