"""template.yaml, samconfig.toml, the Dockerfiles, .dockerignore and the requirement sets.

``sam validate --lint`` runs from ``.venv-sam`` (``make sam-venv``; the test is skipped, saying so, when that
virtual environment is absent). The rest parses the files directly.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from scripts import invoke
from scripts.footprint import normalize, requirement_names

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SAM_VENV = ROOT / ".venv-sam"
SAM = SAM_VENV / "bin" / "sam"
WRITE_ACTIONS = re.compile(r"^s3:(Put|Delete|Abort|Restore|Replicate|Create|\*)", re.I)
SAM_WRITE_POLICIES = {"S3CrudPolicy", "S3WritePolicy", "S3FullAccessPolicy", "AmazonS3FullAccessPolicy"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return invoke.load_template(TEMPLATE)


def _sam_env(tmp_path: Path) -> dict[str, str]:
    """No AWS credentials, profile or region: what validate --lint needs must be offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_CA_BUNDLE"}
    env.update(
        SAM_CLI_TELEMETRY="0",
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def _need_sam() -> None:
    if not SAM.is_file():
        pytest.skip(
            f"{SAM} is absent: create it with `make sam-venv` (python3 -m venv .venv-sam && "
            ".venv-sam/bin/pip install -c requirements/sam-constraints.txt -r requirements/sam.txt)"
        )


# ---------------------------------------------------------------------------------------------------------
# sam validate --lint, and the template as SAM translates it
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow  # runs SAM CLI from .venv-sam
def test_sam_validate_lint_passes_offline(tmp_path: Path) -> None:
    _need_sam()
    result = subprocess.run(
        [str(SAM), "validate", "--lint", "--template", str(TEMPLATE)],
        cwd=ROOT,
        env=_sam_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


@pytest.mark.slow  # runs SAM CLI from .venv-sam
def test_sam_validate_lint_catches_errors(tmp_path: Path) -> None:
    """The lint is real: a wrong property value fails it."""
    _need_sam()
    broken = tmp_path / "template.yaml"
    broken.write_text(TEMPLATE.read_text().replace("InvokeMode: BUFFERED", "InvokeMode: BUFFERD"))
    result = subprocess.run(
        [str(SAM), "validate", "--lint", "--template", str(broken)],
        cwd=tmp_path,
        env=_sam_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    assert "BUFFERD" in result.stdout + result.stderr


_TRANSLATE = r"""
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

class NoManagedPolicies:
    def load(self):
        return {}

template = yaml_parse(open(sys.argv[1]).read())
for name, res in template["Resources"].items():
    if res["Type"] == "AWS::Serverless::Function":
        res["Properties"]["ImageUri"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/repo:" + name
print(json.dumps(transform(template, {"ArtifactBucket": "example-bucket"}, NoManagedPolicies())))
"""


@pytest.fixture(scope="module")
def translated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The CloudFormation that SAM makes of the template (samtranslator from .venv-sam, offline)."""
    _need_sam()
    tmp = tmp_path_factory.mktemp("sam-translate")
    env = {**_sam_env(tmp), "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run(
        [str(SAM_VENV / "bin" / "python"), "-c", _TRANSLATE, str(TEMPLATE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for policy in role["Properties"].get("Policies", []):
        statements = policy["PolicyDocument"]["Statement"]
        out += statements if isinstance(statements, list) else [statements]
    return out


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


REBUILD_FUNCTIONS = ("PlanFunction", "EmbedFunction", "PublishFunction")
INDEX_ARN = "arn:${AWS::Partition}:s3:::${ArtifactBucket}/${IndexPrefix}/"


def test_translated_roles_scope_writes_to_the_index_prefix(translated: dict[str, Any]) -> None:
    resources = translated["Resources"]
    for role in [f"{name}Role" for name in REBUILD_FUNCTIONS] + ["RebuildStateMachineRole"]:
        writes = [
            s
            for s in _statements(resources[role])
            if any(WRITE_ACTIONS.match(a) for a in _as_list(s["Action"]))
        ]
        assert writes, f"{role} must be able to write its part of the index prefix"
        for statement in writes:
            for resource in _as_list(statement["Resource"]):
                assert resource["Fn::Sub"].startswith(INDEX_ARN), (role, statement)
    search_writes = [
        s
        for s in _statements(resources["SearchFunctionRole"])
        if any(WRITE_ACTIONS.match(a) for a in _as_list(s["Action"]))
    ]
    assert search_writes == [], "the search function only reads"
    for name in ("SearchFunctionRole", *(f"{n}Role" for n in REBUILD_FUNCTIONS)):
        assert resources[name]["Properties"]["ManagedPolicyArns"] == [
            "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
        ]


def test_translated_api_routes_and_schedule(translated: dict[str, Any]) -> None:
    resources = translated["Resources"]
    paths = resources["SearchApi"]["Properties"]["Body"]["paths"]
    assert set(paths) == {"/", "/{proxy+}"}
    for route in paths.values():
        integration = route["x-amazon-apigateway-any-method"]["x-amazon-apigateway-integration"]
        assert integration["payloadFormatVersion"] == "2.0"
        assert integration["timeoutInMillis"] <= 30000
    rules = [r for r in resources.values() if r["Type"] == "AWS::Events::Rule"]
    assert len(rules) == 1
    assert rules[0]["Properties"]["State"] == {"Fn::If": ["ScheduleEnabled", "ENABLED", "DISABLED"]}
    assert json.loads(rules[0]["Properties"]["Targets"][0]["Input"]) == {"full": False}
    assert rules[0]["Properties"]["Targets"][0]["Arn"] == {"Ref": "RebuildStateMachine"}
    functions = {k: v for k, v in resources.items() if v["Type"] == "AWS::Lambda::Function"}
    assert set(functions) == {"SearchFunction", *REBUILD_FUNCTIONS}
    for function in functions.values():
        assert function["Properties"]["PackageType"] == "Image"
        assert function["Properties"]["Architectures"] == ["x86_64"]


# ---------------------------------------------------------------------------------------------------------
# the template, parsed
# ---------------------------------------------------------------------------------------------------------
def _function(template: dict[str, Any], name: str) -> dict[str, Any]:
    resource = template["Resources"][name]
    assert resource["Type"] == "AWS::Serverless::Function"
    return resource


def test_loader_keeps_intrinsic_functions(template: dict[str, Any]) -> None:
    env = _function(template, "SearchFunction")["Properties"]["Environment"]["Variables"]
    assert env["INDEX_URI"] == {"Fn::Sub": "s3://${ArtifactBucket}/${IndexPrefix}"}
    assert env["PRECISION"] == {"Ref": "Precision"}
    assert template["Outputs"]["FunctionUrl"]["Value"] == {"Fn::GetAtt": ["SearchFunctionUrl", "FunctionUrl"]}


def test_search_function_is_an_x86_64_image(template: dict[str, Any]) -> None:
    fn = _function(template, "SearchFunction")
    props = fn["Properties"]
    assert props["PackageType"] == "Image"
    assert props["Architectures"] == ["x86_64"]
    assert "Runtime" not in props and "Handler" not in props and "CodeUri" not in props
    assert fn["Metadata"]["DockerContext"] == "."
    assert fn["Metadata"]["Dockerfile"] == "handler/Dockerfile"
    assert fn["Metadata"]["DockerBuildTarget"] == "runtime"
    assert (ROOT / fn["Metadata"]["Dockerfile"]).is_file()
    assert 0 < props["Timeout"] <= 29, "API Gateway's integration timeout is 30 s"
    assert props["EphemeralStorage"] == {"Size": {"Ref": "EphemeralStorageSize"}}
    assert int(template["Parameters"]["EphemeralStorageSize"]["Default"]) >= 1024


def test_search_environment_is_exactly_the_service_configuration(template: dict[str, Any]) -> None:
    from handler.config import ENV_VARS

    env = _function(template, "SearchFunction")["Properties"]["Environment"]["Variables"]
    assert sorted(env) == sorted(ENV_VARS)
    assert tuple(invoke.CONFIG_NAMES) == tuple(ENV_VARS), "scripts/invoke.py's fallback list is stale"
    assert "Globals" not in template or "Environment" not in template["Globals"].get("Function", {})


def test_template_defaults_pass_the_service_validation(template: dict[str, Any]) -> None:
    """The environment the template gives under its defaults is valid for handler.config and equals the
    service's own defaults (no drift between the two), URIs and threads aside."""
    from handler.config import Settings

    resolved, unresolved = invoke.template_environment(
        TEMPLATE, "SearchFunction", {"ArtifactBucket": "example-bucket"}
    )
    assert unresolved == {}
    assert resolved["MODEL_URI"] == "s3://example-bucket/models/clip"
    assert resolved["INDEX_URI"] == "s3://example-bucket/indexes/clip"
    assert resolved["CACHE_DIR"] == "/tmp/clip-search"
    deployed = Settings.from_env(resolved)
    defaults = Settings.from_env({"MODEL_URI": resolved["MODEL_URI"], "INDEX_URI": resolved["INDEX_URI"]})
    assert deployed.with_(ort_threads=1) == defaults.with_(ort_threads=1)
    baked, _ = invoke.template_environment(
        TEMPLATE, "SearchFunction", {"ArtifactBucket": "example-bucket", "BakedModel": "true"}
    )
    assert baked["MODEL_URI"] == "/opt/model" and baked["MODEL_VERIFY"] == "off"
    assert resolved["MODEL_VERIFY"] == "sha256"  # S3 bundles: always verified anyway
    # Every precision the template allows is one the service accepts.
    from handler.config import PRECISIONS

    assert set(template["Parameters"]["Precision"]["AllowedValues"]) <= set(PRECISIONS)


def test_api_events_and_parameters(template: dict[str, Any]) -> None:
    events = _function(template, "SearchFunction")["Properties"]["Events"]
    routes = {
        (e["Properties"]["Path"], e["Properties"]["Method"])
        for e in events.values()
        if e["Type"] == "HttpApi"
    }
    assert routes == {("/", "ANY"), ("/{proxy+}", "ANY")}
    params = template["Parameters"]
    for name in (
        "MemorySize",
        "OrtThreads",
        "Precision",
        "ArtifactBucket",
        "ModelPrefix",
        "IndexPrefix",
        "ApiKey",
        "CorsOrigins",
        "IndexRefreshSeconds",
        "EnableFunctionUrl",
    ):
        assert name in params, name
    assert params["ApiKey"]["NoEcho"] is True
    assert params["ApiKey"]["Default"] == ""
    assert params["EnableFunctionUrl"]["Default"] == "false"
    assert params["EnableRebuildSchedule"]["Default"] == "false"
    assert int(params["MaxImageBytes"]["MaxValue"]) <= 4_500_000  # Lambda's 6 MB payload after base64
    for name in ("ModelPrefix", "IndexPrefix", "SourcePrefix"):  # no slashes at the ends: ${Prefix}/* scoping
        pattern = re.compile(params[name]["AllowedPattern"])
        assert pattern.match(params[name]["Default"])
        for bad in ("/indexes", "indexes/", ""):
            assert not pattern.match(bad), (name, bad)


def test_function_url_is_conditional_and_public_with_both_permissions(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    assert template["Conditions"]["HasFunctionUrl"] == {"Fn::Equals": [{"Ref": "EnableFunctionUrl"}, "true"]}
    urls = {k: v for k, v in resources.items() if v["Type"] == "AWS::Lambda::Url"}
    assert list(urls) == ["SearchFunctionUrl"]
    assert urls["SearchFunctionUrl"]["Condition"] == "HasFunctionUrl"
    perms = [v for v in resources.values() if v["Type"] == "AWS::Lambda::Permission"]
    assert {p["Properties"]["Action"] for p in perms} == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    assert all(p["Condition"] == "HasFunctionUrl" for p in perms)
    assert template["Outputs"]["FunctionUrl"]["Condition"] == "HasFunctionUrl"


def test_rebuild_state_machine(template: dict[str, Any]) -> None:
    """Plan, embed and publish functions from the one builder image; a Distributed Map between them."""
    import importlib

    for name in REBUILD_FUNCTIONS:
        fn = _function(template, name)
        props = fn["Properties"]
        assert props["PackageType"] == "Image" and props["Architectures"] == ["x86_64"]
        assert (
            fn["Metadata"]["Dockerfile"] == "index_builder/Dockerfile"
            and fn["Metadata"]["DockerTag"] == "rebuild"
        )
        module, _, attr = props["ImageConfig"]["Command"][0].rpartition(".")
        assert callable(getattr(importlib.import_module(module), attr))
        assert props["Timeout"] == 900
        assert "Events" not in props, "the state machine is what the schedule starts"
    env, unresolved = invoke.template_environment(TEMPLATE, "PlanFunction", {"ArtifactBucket": "b"})
    assert unresolved == {}
    assert env["INDEX_URI"] == "s3://b/indexes/clip" and env["MODEL_URI"] == "s3://b/models/clip"
    assert env["SOURCE_URI"] == "s3://b/collection"
    sm = template["Resources"]["RebuildStateMachine"]
    assert sm["Type"] == "AWS::Serverless::StateMachine" and sm["Properties"]["Type"] == "STANDARD"
    states = sm["Properties"]["Definition"]["States"]
    embed = states["Embed"]
    assert embed["Type"] == "Map" and embed["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert embed["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert embed["ItemBatcher"]["MaxItemsPerBatchPath"] == "$.batch_items"
    assert embed["MaxConcurrencyPath"] and embed["ToleratedFailurePercentagePath"]
    retry = embed["ItemProcessor"]["States"]["EmbedBatch"]["Retry"]
    assert retry[0]["ErrorEquals"] == ["BatchIncomplete"] and retry[1]["BackoffRate"] > 1
    schedule = [e for e in sm["Properties"]["Events"].values() if e["Type"] == "Schedule"]
    assert len(schedule) == 1
    assert schedule[0]["Properties"]["State"] == {"Fn::If": ["ScheduleEnabled", "ENABLED", "DISABLED"]}
    # the map's concurrency and failure threshold are stack parameters, passed through the plan's output
    plan_env = invoke.template_environment(
        TEMPLATE, "PlanFunction", {"ArtifactBucket": "b", "RebuildMaxConcurrency": "7"}
    )[0]
    assert plan_env["MAX_CONCURRENCY"] == "7" and plan_env["TOLERATED_FAILURE_PERCENTAGE"] == "0"


def test_write_access_only_under_the_index_prefix(template: dict[str, Any]) -> None:
    for name, resource in template["Resources"].items():
        if resource["Type"] not in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            continue
        writes = []
        for policy in resource["Properties"].get("Policies", []):
            if isinstance(policy, str):
                assert "S3" not in policy or "Read" in policy, (name, policy)
                continue
            assert not set(policy) & SAM_WRITE_POLICIES, (name, policy)
            for statement in policy.get("Statement", []):
                if any(WRITE_ACTIONS.match(a) for a in _as_list(statement["Action"])):
                    assert statement["Effect"] == "Allow"
                    writes.append(statement)
        if name == "SearchFunction":
            assert writes == []
            continue
        assert len(writes) == 1, name
        resources = _as_list(writes[0]["Resource"])
        assert len(resources) == 1 and resources[0]["Fn::Sub"].startswith(INDEX_ARN), (name, resources)
        if name in ("PlanFunction", "PublishFunction"):
            assert resources == [{"Fn::Sub": INDEX_ARN + "*"}]
            assert set(writes[0]["Action"]) == {"s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
        else:  # the embed workers and the Map's ItemReader/ResultWriter: only the work area, no deletes
            assert resources[0]["Fn::Sub"].startswith(INDEX_ARN + ".rebuild/")
            assert "s3:DeleteObject" not in writes[0]["Action"]


def test_outputs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert {"ApiEndpoint", "FunctionUrl", "SearchFunctionName", "RebuildStateMachineArn"} <= set(outputs)
    assert "${SearchApi}" in outputs["ApiEndpoint"]["Value"]["Fn::Sub"]


def test_samconfig() -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    assert config["default"]["deploy"]["parameters"]["capabilities"] == "CAPABILITY_IAM"
    assert config["default"]["deploy"]["parameters"]["resolve_image_repos"] is True
    assert config["default"]["validate"]["parameters"]["lint"] is True


# ---------------------------------------------------------------------------------------------------------
# Dockerfiles and the build context
# ---------------------------------------------------------------------------------------------------------
def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """``(global ARG defaults, [(stage, INSTRUCTION, arguments)])`` with continuation lines joined."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    args: dict[str, str] = {}
    out: list[tuple[str, str, str]] = []
    stage = ""
    for line in lines:
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            match = re.match(r"^(\S+)(?:\s+AS\s+(\S+))?$", rest.strip(), re.I)
            assert match, line
            stage = match.group(2) or ""
        elif instr == "ARG" and not stage and "=" in rest:
            key, value = rest.split("=", 1)
            args[key.strip()] = value.strip()
        out.append((stage, instr, rest.strip()))
    return args, out


def _copy_sources(rest: str) -> list[str]:
    parts = [p for p in rest.split() if not p.startswith("--")]
    return parts[:-1]


def dockerignore_included(rel: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]
    excluded = False
    for negated, rx in patterns:
        if any(rx.match(c) for c in candidates):
            excluded = not negated
    return not excluded


def dockerignore_patterns(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    out = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line[1:] if negated else line).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        out.append((negated, re.compile(f"^{regex}$")))
    return out


def test_handler_dockerfile() -> None:
    args, instructions = parse_dockerfile(ROOT / "handler" / "Dockerfile")
    assert args["BASE_IMAGE"] == "public.ecr.aws/lambda/python:3.12"
    stages = [rest for stage, instr, rest in instructions if instr == "FROM"]
    assert stages == ["${BASE_IMAGE} AS build", "${BASE_IMAGE} AS runtime", "runtime AS baked"]
    build = [(i, r) for s, i, r in instructions if s == "build"]
    assert any(i == "RUN" and "dnf install" in r and "gcc-c++" in r for i, r in build)
    assert any(i == "ENV" and re.search(r"\bHNSWLIB_NO_NATIVE=1\b", r) for i, r in build)
    pip = [r for i, r in build if i == "RUN" and "pip install" in r]
    assert len(pip) == 1
    assert "-c /build/constraints.txt" in pip[0] and "-r /build/requirements/handler.txt" in pip[0]
    runtime = [(i, r) for s, i, r in instructions if s == "runtime"]
    copies = [r for i, r in runtime if i == "COPY"]
    assert [_copy_sources(r) for r in copies if "--from=build" not in r] == [["handler/"]], "handler/ only"
    assert ("CMD", '["handler.lambda_function.lambda_handler"]') in runtime
    baked = [(i, r) for s, i, r in instructions if s == "baked"]
    assert ("ENV", "MODEL_URI=/opt/model") in baked
    # A baked bundle is verified once at image build, so cold starts may skip the sha256 (MODEL_VERIFY=off).
    assert ("ENV", "MODEL_VERIFY=off") in baked
    assert any(i == "RUN" and "read_manifest('/opt/model').verify()" in r for i, r in baked)
    assert any(i == "RUN" and "compileall" in r for i, r in runtime), (
        "no .pyc: Lambda's /var/task is read-only"
    )
    text = (ROOT / "handler" / "Dockerfile").read_text()
    assert not re.search(r"^[^#]*\b(torch|open_clip)\b", text, re.M)


def test_index_builder_dockerfile() -> None:
    args, instructions = parse_dockerfile(ROOT / "index_builder" / "Dockerfile")
    assert args["BASE_IMAGE"] == "public.ecr.aws/lambda/python:3.12"
    pip = [r for s, i, r in instructions if i == "RUN" and "pip install" in r]
    assert (
        len(pip) == 1
        and "-r /build/requirements/index_builder.txt" in pip[0]
        and "-c /build/constraints.txt" in pip[0]
    )
    assert any(i == "ENV" and "HNSWLIB_NO_NATIVE=1" in r for s, i, r in instructions if s == "build")
    final = [(i, r) for s, i, r in instructions if s == "runtime"]
    assert ("CMD", '["index_builder.lambda_job.handler"]') in final
    sources = {src for i, r in final if i == "COPY" and "--from" not in r for src in _copy_sources(r)}
    assert sources == {"handler/", "index_builder/"}


def test_build_context_holds_what_the_images_copy_and_nothing_else() -> None:
    patterns = dockerignore_patterns(ROOT / ".dockerignore")
    for dockerfile in (ROOT / "handler" / "Dockerfile", ROOT / "index_builder" / "Dockerfile"):
        _, instructions = parse_dockerfile(dockerfile)
        for _stage, instr, rest in instructions:
            if instr != "COPY" or "--from" in rest:
                continue
            for src in _copy_sources(rest):
                if src.startswith("${"):
                    continue  # the baked stage's MODEL_DIR: checked below
                path = ROOT / src
                assert path.exists(), f"{dockerfile}: COPY {src}: not in the repository"
                files = (
                    [path]
                    if path.is_file()
                    else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
                )
                for f in files:
                    assert dockerignore_included(f.relative_to(ROOT).as_posix(), patterns), f
    for rel in ("artifacts/demo/bundle/manifest.json", "artifacts/vitb32/bundle/visual.onnx"):
        assert dockerignore_included(rel, patterns), rel
    for rel in (
        ".venv/bin/python",
        ".venv-sam/bin/sam",
        "tests/deploy/test_template.py",
        "artifacts/demo/index/CURRENT",
        "export/cli.py",
        "demo/model/demo-clip.pt",
        ".git/HEAD",
        "handler/__pycache__/app.cpython-312.pyc",
        ".aws-sam/build/template.yaml",
        "bench/out/x.json",
    ):
        assert not dockerignore_included(rel, patterns), rel


# ---------------------------------------------------------------------------------------------------------
# requirement sets
# ---------------------------------------------------------------------------------------------------------
def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalize(name)] = version.strip()
    return pins


def test_requirement_sets() -> None:
    handler = {normalize(n) for n in requirement_names(ROOT / "requirements" / "handler.txt")}
    builder = {normalize(n) for n in requirement_names(ROOT / "requirements" / "index_builder.txt")}
    assert not handler & {"torch", "torchvision", "open-clip-torch", "open-clip"}
    assert builder - handler == {"tqdm", "pyarrow"}  # pyarrow: parquet ids of import-embeddings
    assert "pyarrow" not in handler  # the service image stays without it
    pins = _pins()
    assert not (handler | builder) - set(pins), "every runtime requirement is pinned in constraints.txt"
    sam = [
        line
        for line in (ROOT / "requirements" / "sam.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(sam) == 1 and re.fullmatch(r"aws-sam-cli==\d+\.\d+\.\d+", sam[0])
    frozen = (ROOT / "requirements" / "sam-constraints.txt").read_text()
    assert sam[0] in frozen.splitlines()
