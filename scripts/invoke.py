"""Invoke the search function locally with an API Gateway / function URL event (``make invoke EVENT=...``).

    python scripts/invoke.py events/search-text.json [--env-from-template] [--param Name=Value ...]

Two paths, and the first line printed says which one ran:

* ``ran with sam local invoke`` - a container runtime answers (``docker info``), SAM CLI is installed
  (``.venv-sam/bin/sam`` or ``sam`` on PATH) and the artifacts are reachable from inside the container
  (``s3://`` URIs, or ``/opt/model`` of the baked image): ``sam local invoke SearchFunction -e EVENT`` with an
  ``--env-vars`` file (``sam build SearchFunction`` first when ``.aws-sam/build`` has no template yet).
* ``no container runtime: ran lambda_handler in a subprocess`` - the same event goes through
  ``handler.lambda_function.lambda_handler`` in a fresh interpreter (``python -c``) with the environment the
  template gives the function.

The environment (``--env-from-template``, the default): the search function's ``Environment.Variables`` from
template.yaml, resolved with the Parameters' defaults (``--param`` overrides, like sam's
``--parameter-overrides``); then any of those variables set in the caller's environment wins; MODEL_URI and
INDEX_URI default to the local demo artifacts ``artifacts/demo/bundle`` and ``artifacts/demo/index`` (``make
demo``) unless the caller sets them. ``--no-env-from-template``: only the caller's values and those two.

Output (stdout): the path line, then the function's response as one JSON line - the shape ``sam local invoke``
prints (``statusCode``, ``headers``, ``body``, ``isBase64Encoded``) - then the same response readable, with
the JSON body parsed. The function's own logs and a ``REPORT`` line go to stderr. Exit status: 0 when the
function returned (whatever its statusCode; ``--expect-status`` checks one), 1 when the invocation failed,
2 for a usage problem.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
FUNCTION = "SearchFunction"
DEMO_MODEL = ROOT / "artifacts" / "demo" / "bundle"
DEMO_INDEX = ROOT / "artifacts" / "demo" / "index"
SAM_PATH_LINE = "ran with sam local invoke"
SUBPROCESS_LINE = "ran lambda_handler in a subprocess"
NO_RUNTIME_LINE = f"no container runtime: {SUBPROCESS_LINE}"
# The service's configuration names (handler/config.py ENV_VARS); used when handler.config cannot be imported.
CONFIG_NAMES = (
    "MODEL_URI",
    "INDEX_URI",
    "ORT_THREADS",
    "PRECISION",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "CORS_ORIGINS",
    "API_KEY",
    "LOG_LEVEL",
    "INDEX_REFRESH_SECONDS",
    "CACHE_DIR",
    "COLLECTION_ROOT",
    "PRESIGN_EXPIRY_SECONDS",
    "MODEL_ID",
    "MAX_REQUEST_PIXELS",
    "MODEL_VERIFY",
    "INDEX_VERIFY",
)
PSEUDO_PARAMETERS = {
    "AWS::Region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "local",
    "AWS::StackId": "local",
}


def config_names() -> tuple[str, ...]:
    try:
        sys.path.insert(0, str(ROOT))
        from handler.config import ENV_VARS
    except ImportError:
        return CONFIG_NAMES
    finally:
        sys.path.remove(str(ROOT))
    return tuple(ENV_VARS)


# --------------------------------------------------------------------------------------------------------
# template.yaml: a YAML loader that keeps CloudFormation's short-form tags, and a small resolver
# --------------------------------------------------------------------------------------------------------
_TAGS = (
    "Ref",
    "Sub",
    "GetAtt",
    "If",
    "Equals",
    "Not",
    "And",
    "Or",
    "Join",
    "Select",
    "Split",
    "FindInMap",
    "Base64",
    "Cidr",
    "ImportValue",
    "GetAZs",
    "Condition",
    "Transform",
    "ToJsonString",
    "Length",
)


def cfn_loader() -> type:
    """A ``yaml.SafeLoader`` subclass turning ``!Ref x`` into ``{"Ref": x}``, ``!Sub s`` into
    ``{"Fn::Sub": s}``, ``!GetAtt A.B`` into ``{"Fn::GetAtt": ["A", "B"]}`` (and so on for every short
    form)."""
    import yaml

    class CfnLoader(yaml.SafeLoader):
        pass

    def make(tag: str) -> Any:
        key = tag if tag in ("Ref", "Condition") else f"Fn::{tag}"

        def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
            if isinstance(node, yaml.ScalarNode):
                value: Any = loader.construct_scalar(node)
                if tag == "GetAtt":
                    value = str(value).split(".", 1)
            elif isinstance(node, yaml.SequenceNode):
                value = loader.construct_sequence(node, deep=True)
            else:
                value = loader.construct_mapping(node, deep=True)
            return {key: value}

        return construct

    for tag in _TAGS:
        CfnLoader.add_constructor(f"!{tag}", make(tag))
    return CfnLoader


def load_template(path: str | os.PathLike[str] = TEMPLATE) -> dict[str, Any]:
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=cfn_loader())  # a SafeLoader subclass


class Unresolved(str):
    """A value the local resolver cannot know (a parameter without default, a resource attribute)."""

    __slots__ = ()


_NO_VALUE = object()


class Resolver:
    """Evaluates the intrinsic functions a template's environment uses: Ref (parameters, pseudo parameters),
    Fn::Sub, Fn::If with Conditions (Equals/Not/And/Or/Condition), Fn::Join, Fn::Select."""

    def __init__(self, template: Mapping[str, Any], overrides: Mapping[str, str] | None = None):
        self.template = template
        self.params: dict[str, str | Unresolved] = {}
        for name, spec in (template.get("Parameters") or {}).items():
            if overrides and name in overrides:
                self.params[name] = str(overrides[name])
            elif "Default" in spec:
                self.params[name] = _scalar(spec["Default"])
            else:
                self.params[name] = Unresolved(f"<{name}>")
        unknown = set(overrides or ()) - set(self.params)
        if unknown:
            raise ValueError(f"unknown template parameter(s): {', '.join(sorted(unknown))}")
        self._conditions: dict[str, bool] = {}

    def ref(self, name: str) -> Any:
        if name in self.params:
            return self.params[name]
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[name]
        return Unresolved(f"<{name}>")

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            spec = (self.template.get("Conditions") or {}).get(name)
            if spec is None:
                raise ValueError(f"unknown condition {name!r}")
            self._conditions[name] = bool(self.resolve(spec))
        return self._conditions[name]

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (self.resolve(x) for x in value) if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {k: v for k, v in ((k, self.resolve(x)) for k, x in value.items()) if v is not _NO_VALUE}
        ((key, arg),) = value.items()
        if key == "Ref":
            return self.ref(arg)
        if key == "Condition":
            return self.condition(arg)
        if key == "Fn::If":
            name, yes, no = arg
            return self.resolve(yes if self.condition(name) else no)
        if key == "Fn::Equals":
            a, b = (self.resolve(x) for x in arg)
            return _scalar(a) == _scalar(b)
        if key == "Fn::Not":
            return not self.resolve(arg[0])
        if key == "Fn::And":
            return all(self.resolve(x) for x in arg)
        if key == "Fn::Or":
            return any(self.resolve(x) for x in arg)
        if key == "Fn::Join":
            delim, parts = arg
            parts = self.resolve(parts)
            joined = str(delim).join(_scalar(p) for p in parts)
            return Unresolved(joined) if any(isinstance(p, Unresolved) for p in parts) else joined
        if key == "Fn::Select":
            index, items = self.resolve(arg)
            return items[int(index)]
        if key == "Fn::Sub":
            return self._sub(arg)
        if key == "Fn::GetAtt":
            return Unresolved(f"<{'.'.join(arg) if isinstance(arg, list) else arg}>")
        return {key: self.resolve(arg)}

    def _sub(self, arg: Any) -> Any:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
        missing = False

        def repl(m: re.Match[str]) -> str:
            nonlocal missing
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                value = variables[name]
            elif "." in name and not name.startswith("AWS::"):
                value = Unresolved(f"<{name}>")
            else:
                value = self.ref(name)
            if isinstance(value, Unresolved):
                missing = True
            return _scalar(value)

        out = re.sub(r"\$\{([^}]+)\}", repl, text)
        return Unresolved(out) if missing else out


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def template_environment(
    template_path: str | os.PathLike[str] = TEMPLATE,
    function: str = FUNCTION,
    overrides: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """``(resolved, unresolved)`` environment of ``function`` (Globals merged in): ``resolved`` maps each
    variable to its string value under the parameter defaults/overrides; ``unresolved`` holds those that need
    a value the template does not give locally (e.g. ``MODEL_URI`` -> ``s3://<ArtifactBucket>/...``)."""
    template = load_template(template_path)
    resources = template.get("Resources") or {}
    if function not in resources:
        raise ValueError(f"{template_path}: no resource {function!r}")
    resolver = Resolver(template, overrides)
    variables: dict[str, Any] = {}
    globals_env = ((template.get("Globals") or {}).get("Function") or {}).get("Environment") or {}
    variables.update(globals_env.get("Variables") or {})
    props = resources[function].get("Properties") or {}
    variables.update(((props.get("Environment") or {}).get("Variables")) or {})
    resolved: dict[str, str] = {}
    unresolved: dict[str, str] = {}
    for name, raw in variables.items():
        value = resolver.resolve(raw)
        if value is _NO_VALUE:
            continue
        if isinstance(value, Unresolved):
            unresolved[name] = str(value)
        elif isinstance(value, (dict, list)):
            unresolved[name] = json.dumps(value)
        else:
            resolved[name] = _scalar(value)
    return resolved, unresolved


def template_function_settings(
    template_path: str | os.PathLike[str] = TEMPLATE,
    function: str = FUNCTION,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """MemorySize and Timeout of ``function`` (Globals merged), resolved like the environment."""
    template = load_template(template_path)
    resolver = Resolver(template, overrides)
    merged = dict(((template.get("Globals") or {}).get("Function")) or {})
    merged.update(template["Resources"][function].get("Properties") or {})
    out = {}
    for key, default in (("MemorySize", 128), ("Timeout", 3)):
        value = resolver.resolve(merged.get(key, default))
        out[key] = int(value) if not isinstance(value, Unresolved) else default
    return out


def function_environment(
    *,
    from_template: bool = True,
    template: str | os.PathLike[str] = TEMPLATE,
    params: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The handler's configuration variables for a local invoke and notes on where they came from."""
    environ = os.environ if environ is None else environ
    names = config_names()
    notes: list[str] = []
    env: dict[str, str] = {}
    unresolved: dict[str, str] = {}
    if from_template:
        env, unresolved = template_environment(template, FUNCTION, params)
    for name in names:
        if name in environ:
            env[name] = environ[name]
            unresolved.pop(name, None)
            notes.append(f"{name} from the caller's environment")
    for name, default in (("MODEL_URI", DEMO_MODEL), ("INDEX_URI", DEMO_INDEX)):
        if name not in environ:
            env[name] = str(default)
            unresolved.pop(name, None)
            notes.append(f"{name}={default} (local demo artifacts)")
    for name, value in unresolved.items():
        notes.append(f"{name} left unset: the template gives {value} (pass --param or set it)")
    return env, notes


# --------------------------------------------------------------------------------------------------------
# the two paths
# --------------------------------------------------------------------------------------------------------
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


def readable(response: Mapping[str, Any]) -> str:
    """statusCode, headers and the body (parsed when it is JSON) as text for a person."""
    lines = [f"statusCode: {response.get('statusCode')}"]
    headers = dict(response.get("headers") or {})
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers.setdefault(name, ", ".join(map(str, values)))
    lines.append("headers:")
    lines += [f"  {k}: {v}" for k, v in sorted(headers.items())]
    if response.get("cookies"):
        lines.append(f"cookies: {response['cookies']}")
    body = response.get("body")
    if response.get("isBase64Encoded"):
        lines.append(f"body: <{len(body or '')} base64 characters>")
    else:
        try:
            parsed = json.loads(body) if isinstance(body, str) else body
            lines.append("body:")
            lines.append(json.dumps(parsed, indent=2, ensure_ascii=False))
        except ValueError:
            lines.append(f"body: {body}")
    return "\n".join(lines)


def _parse_params(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in values:
        if "=" not in item:
            raise UsageError(f"--param {item!r}: expected Name=Value")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("event", help="event JSON file (events/search-text.json, ...)")
    parser.add_argument(
        "--env-from-template",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start from the template's environment and parameter defaults (default: yes)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="template parameter override (repeatable), e.g. --param Precision=int8",
    )
    parser.add_argument(
        "--mode",
        choices=("auto", "sam", "subprocess"),
        default="auto",
        help="auto: sam local invoke when a container runtime is usable, else the subprocess",
    )
    parser.add_argument("--template", default=str(TEMPLATE))
    parser.add_argument("--python", default=sys.executable, help="interpreter of the subprocess path")
    parser.add_argument("--root", default=str(ROOT), help="directory holding handler/ (subprocess path)")
    parser.add_argument("--no-build", action="store_true", help="sam path: do not run sam build first")
    parser.add_argument("--expect-status", type=int, help="exit 1 unless the response has this statusCode")
    parser.add_argument("--output", help="also write the response JSON to this file")
    args = parser.parse_args(argv)
    event = Path(args.event)
    try:
        if not event.is_file():
            raise UsageError(f"no such event file: {event}")
        json.loads(event.read_text(encoding="utf-8"))
        params = _parse_params(args.param)
        env, notes = function_environment(
            from_template=args.env_from_template, template=args.template, params=params
        )
        for name in ("MODEL_URI", "INDEX_URI"):
            value = env.get(name, "")
            if value and "://" not in value and not Path(value).exists():
                hint = " (run `make demo` first)" if Path(value) in (DEMO_MODEL, DEMO_INDEX) else ""
                raise UsageError(f"{name}={value} does not exist{hint}")
        path, line = choose_path(env, args.mode)
    except (UsageError, ValueError, OSError) as e:
        print(f"invoke: {e}", file=sys.stderr)
        return 2
    print(line, flush=True)
    for note in notes:
        print(f"  env: {note}", file=sys.stderr)
    settings = template_function_settings(args.template, FUNCTION, params)
    try:
        if path == "sam":
            response = run_sam(event, env, params, template=Path(args.template), build=not args.no_build)
        else:
            response = run_subprocess(
                event,
                env,
                python=args.python,
                root=Path(args.root),
                memory_mb=settings["MemorySize"],
                timeout_s=settings["Timeout"],
            )
    except (InvocationError, UsageError, subprocess.SubprocessError) as e:
        print(f"invoke: {e}", file=sys.stderr)
        return 1
    print(json.dumps(response, ensure_ascii=False), flush=True)
    print(readable(response), flush=True)
    if args.output:
        Path(args.output).write_text(
            json.dumps(response, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    if args.expect_status is not None and response.get("statusCode") != args.expect_status:
        print(
            f"invoke: statusCode {response.get('statusCode')} != expected {args.expect_status}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
