"""The search function's environment for a local invoke (scripts/invoke.py): template.yaml read with
CloudFormation's short-form tags, its intrinsic functions resolved under the parameter defaults (or
``--param`` overrides), then the caller's environment and the local demo artifacts on top."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
FUNCTION = "SearchFunction"
DEMO_MODEL = ROOT / "artifacts" / "demo" / "bundle"
DEMO_INDEX = ROOT / "artifacts" / "demo" / "index"
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
