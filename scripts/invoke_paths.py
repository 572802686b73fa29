"""The two ways scripts/invoke.py runs the search function: ``sam local invoke`` when a container runtime,
SAM CLI and container-readable artifacts are there, else ``lambda_handler`` in a fresh interpreter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scripts.invoke_env import FUNCTION, ROOT, TEMPLATE, config_names

SAM_PATH_LINE = "ran with sam local invoke"
SUBPROCESS_LINE = "ran lambda_handler in a subprocess"
NO_RUNTIME_LINE = f"no container runtime: {SUBPROCESS_LINE}"


def container_runtime(timeout: float = 20.0) -> tuple[bool, str]:
    """``(True, "")`` when ``docker info`` succeeds, else ``(False, why)``."""
    docker = shutil.which("docker")
    if docker is None:
        return False, "no docker client on PATH"
    try:
        result = subprocess.run(
            [docker, "info"], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"docker info failed ({e})"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return False, f"docker info failed ({lines[-1] if lines else 'exit ' + str(result.returncode)})"
    return True, ""


def find_sam() -> str | None:
    """$SAM_CLI, else ``.venv-sam/bin/sam`` (make sam-venv), else ``sam`` on PATH."""
    if os.environ.get("SAM_CLI"):
        return os.environ["SAM_CLI"]
    candidate = ROOT / ".venv-sam" / "bin" / "sam"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("sam")


def _local_uris(env: Mapping[str, str]) -> list[str]:
    """Variables naming a local path the container cannot read (/opt/... of a baked image is fine)."""
    out = []
    for name in ("MODEL_URI", "INDEX_URI", "COLLECTION_ROOT"):
        value = env.get(name) or ""
        if value and not value.startswith(("s3://", "/opt/")):
            out.append(f"{name}={value}")
    return out


def choose_path(env: Mapping[str, str], mode: str) -> tuple[str, str]:
    """``("sam" | "subprocess", first output line)``."""
    if mode == "subprocess":
        return "subprocess", f"subprocess requested: {SUBPROCESS_LINE}"
    ok, why = container_runtime()
    if not ok:
        if mode == "sam":
            raise UsageError(f"--mode sam: no container runtime ({why})")
        return "subprocess", NO_RUNTIME_LINE
    sam = find_sam()
    local = _local_uris(env)
    problem = (
        "SAM CLI is not installed (make .venv-sam)"
        if sam is None
        else f"{', '.join(local)} is not readable inside the container (use s3:// or the baked image)"
        if local
        else ""
    )
    if problem:
        if mode == "sam":
            raise UsageError(f"--mode sam: {problem}")
        return "subprocess", f"container runtime present but {problem}: {SUBPROCESS_LINE}"
    return "sam", SAM_PATH_LINE


class UsageError(Exception):
    pass


_CHILD = r"""
import json, os, resource, sys, time, uuid
t0 = time.perf_counter()
event_path, out_path = sys.argv[1], sys.argv[2]
with open(event_path, encoding="utf-8") as f:
    event = json.load(f)

class Context:
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "SearchFunction")
    function_version = "$LATEST"
    memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3008")
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + function_name
    aws_request_id = str(uuid.uuid4())
    log_group_name = "/aws/lambda/" + function_name
    log_stream_name = "local"
    identity = None
    client_context = None
    _deadline = None
    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

from handler.lambda_function import lambda_handler
init_ms = (time.perf_counter() - t0) * 1000
context = Context()
context._deadline = time.monotonic() + float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "29"))
t1 = time.perf_counter()
response = lambda_handler(event, context)
duration_ms = (time.perf_counter() - t1) * 1000
with open(out_path, "w", encoding="utf-8") as f:
    json.dump(response, f)
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"REPORT RequestId: {context.aws_request_id}\tDuration: {duration_ms:.2f} ms\t"
      f"Init Duration: {init_ms:.2f} ms\tMax Memory Used: {rss_mb:.0f} MB", file=sys.stderr, flush=True)
"""


def run_subprocess(
    event_path: Path,
    env: Mapping[str, str],
    *,
    python: str = sys.executable,
    root: Path = ROOT,
    memory_mb: int = 3008,
    timeout_s: int = 29,
    wall_timeout: float | None = None,
) -> dict[str, Any]:
    """Run ``lambda_handler(event, context)`` in a fresh interpreter (cwd ``root``, ``handler/`` importable
    from there) with ``env`` over the current environment; returns the response."""
    child_env = dict(os.environ)
    for name in config_names():  # only the values chosen for this invoke
        child_env.pop(name, None)
    child_env.update(env)
    child_env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": FUNCTION,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout_s),
            "LAMBDA_TASK_ROOT": str(root),
            "PYTHONPATH": os.pathsep.join(p for p in (str(root), child_env.get("PYTHONPATH", "")) if p),
            "PYTHONUNBUFFERED": "1",
        }
    )
    with tempfile.TemporaryDirectory(prefix="invoke-") as tmp:
        out = Path(tmp) / "response.json"
        # The function's stdout (its JSON log lines) goes to our stderr, like sam local invoke's logs.
        result = subprocess.run(
            [python, "-c", _CHILD, str(Path(event_path).absolute()), str(out)],
            cwd=root,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=wall_timeout or max(300, timeout_s * 10),
        )
        sys.stderr.write(result.stdout.decode("utf-8", "replace"))
        sys.stderr.flush()
        if result.returncode != 0 or not out.is_file():
            raise InvocationError(
                f"lambda_handler failed in the subprocess (exit {result.returncode}); its traceback is above"
            )
        return json.loads(out.read_text(encoding="utf-8"))


class InvocationError(Exception):
    pass


def sam_command(
    sam: str, event_path: Path, env_file: Path, params: Mapping[str, str], template: Path
) -> list[str]:
    cmd = [sam, "local", "invoke", FUNCTION, "--event", str(event_path), "--env-vars", str(env_file)]
    built = ROOT / ".aws-sam" / "build" / "template.yaml"
    cmd += ["--template", str(built if built.is_file() else template)]
    overrides = {"ArtifactBucket": "local-invoke", **params}
    cmd += ["--parameter-overrides", " ".join(f"{k}={v}" for k, v in overrides.items())]
    return cmd


def run_sam(
    event_path: Path,
    env: Mapping[str, str],
    params: Mapping[str, str],
    *,
    template: Path = TEMPLATE,
    build: bool = True,
) -> dict[str, Any]:
    sam = find_sam()
    if sam is None:
        raise UsageError("SAM CLI not found")
    sam_env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    if build and not (ROOT / ".aws-sam" / "build" / "template.yaml").is_file():
        print(f"building the image first: {sam} build {FUNCTION}", file=sys.stderr, flush=True)
        subprocess.run(
            [sam, "build", FUNCTION, "--template", str(template)], cwd=ROOT, env=sam_env, check=True
        )
    with tempfile.TemporaryDirectory(prefix="invoke-") as tmp:
        env_file = Path(tmp) / "env.json"
        env_file.write_text(json.dumps({FUNCTION: dict(env)}), encoding="utf-8")
        cmd = sam_command(sam, Path(event_path).absolute(), env_file, params, template)
        result = subprocess.run(
            cmd, cwd=ROOT, env=sam_env, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
    sys.stderr.write(result.stderr)
    response = last_json_object(result.stdout)
    if result.returncode != 0 or response is None:
        sys.stderr.write(result.stdout)
        raise InvocationError(f"sam local invoke failed (exit {result.returncode})")
    return response


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last line of ``text`` that is a JSON object (sam prints the response last)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None
