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

The pieces: scripts/invoke_env.py (the environment from template.yaml) and scripts/invoke_paths.py (the two
paths); this file is the command line and re-exports their names (``from scripts import invoke``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as `python scripts/invoke.py`: the repository root makes `scripts.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.invoke_env import (
    CONFIG_NAMES,
    DEMO_INDEX,
    DEMO_MODEL,
    FUNCTION,
    PSEUDO_PARAMETERS,
    ROOT,
    TEMPLATE,
    Resolver,
    Unresolved,
    cfn_loader,
    config_names,
    function_environment,
    load_template,
    template_environment,
    template_function_settings,
)
from scripts.invoke_paths import (
    NO_RUNTIME_LINE,
    SAM_PATH_LINE,
    SUBPROCESS_LINE,
    InvocationError,
    UsageError,
    choose_path,
    container_runtime,
    find_sam,
    last_json_object,
    run_sam,
    run_subprocess,
    sam_command,
)

__all__ = [
    "CONFIG_NAMES",
    "DEMO_INDEX",
    "DEMO_MODEL",
    "FUNCTION",
    "NO_RUNTIME_LINE",
    "PSEUDO_PARAMETERS",
    "ROOT",
    "SAM_PATH_LINE",
    "SUBPROCESS_LINE",
    "TEMPLATE",
    "InvocationError",
    "Resolver",
    "Unresolved",
    "UsageError",
    "cfn_loader",
    "choose_path",
    "config_names",
    "container_runtime",
    "find_sam",
    "function_environment",
    "last_json_object",
    "load_template",
    "main",
    "readable",
    "run_sam",
    "run_subprocess",
    "sam_command",
    "template_environment",
    "template_function_settings",
]


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
