"""A small local interpreter for the rebuild state machine *as written in template.yaml*.

It runs the subset of the Amazon States Language the definition uses - Task (a Lambda ARN from
``DefinitionSubstitutions``, resolved to the function's ``ImageConfig.Command`` handler and called
in-process with the function's template environment), Retry, Choice (``BooleanEquals``), Succeed, Fail and
a Distributed Map with an S3 ``ItemReader`` (JSON), ``ItemBatcher`` (``MaxItemsPerBatch[Path]``,
``BatchInput``), ``ResultWriter`` and ``ResultPath: null`` - so the definition and the handlers cannot drift
apart: a renamed handler, a state reading a field the plan does not return, or an event shape the embed
handler does not accept fails the test.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scripts import invoke

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


def path_get(data: Any, path: str) -> Any:
    assert path.startswith("$"), path
    for part in [p for p in path[1:].split(".") if p]:
        data = data[part]
    return data


def resolve_params(params: Mapping[str, Any], data: Any) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        if key.endswith(".$"):
            out[key[:-2]] = path_get(data, value)
        elif isinstance(value, Mapping):
            out[key] = resolve_params(value, data)
        else:
            out[key] = value
    return out


class Failed(Exception):
    def __init__(self, error: str, cause: str):
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


@contextmanager
def _environ(env: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LocalStateMachine:
    """``LocalStateMachine(params, s3_client, context_factory).run(input)``. ``params``: template parameter
    overrides (ArtifactBucket, prefixes); ``env_overrides``: extra environment per function logical id."""

    def __init__(
        self,
        params: Mapping[str, str],
        s3: Any,
        *,
        context: Callable[[str], Any] | None = None,
        env_overrides: Mapping[str, Mapping[str, str]] | None = None,
        template: Path = TEMPLATE,
    ):
        self.template = invoke.load_template(template)
        sm = self.template["Resources"]["RebuildStateMachine"]["Properties"]
        self.definition = sm["Definition"]
        self.params = dict(params)
        self.s3 = s3
        self.context = context or (lambda state: None)
        self.env_overrides = env_overrides or {}
        self.functions: dict[str, str] = {}  # "${Name}" -> logical id
        for name, value in sm["DefinitionSubstitutions"].items():
            assert list(value) == ["Fn::GetAtt"] and value["Fn::GetAtt"][1] == "Arn", value
            self.functions["${" + name + "}"] = value["Fn::GetAtt"][0]
        self.calls: list[tuple[str, Any]] = []
        self.failures: list[Failed] = []
        self.plan_outputs: dict[str, Any] = {}  # run id -> the Plan state's output (for a redrive)

    def handler(self, logical_id: str) -> tuple[Callable[..., Any], dict[str, str]]:
        fn = self.template["Resources"][logical_id]
        module, _, name = fn["Properties"]["ImageConfig"]["Command"][0].rpartition(".")
        env, unresolved = invoke.template_environment(TEMPLATE, logical_id, self.params)
        assert not unresolved, unresolved
        env.update(self.env_overrides.get(logical_id, {}))
        return getattr(importlib.import_module(module), name), env

    def _task(self, state_name: str, state: Mapping[str, Any], data: Any) -> Any:
        fn, env = self.handler(self.functions[state["Resource"]])
        attempts: dict[int, int] = {}
        while True:
            try:
                with _environ(env):
                    self.calls.append((state_name, data))
                    result = json.loads(
                        json.dumps(fn(json.loads(json.dumps(data)), self.context(state_name)))
                    )
                    if isinstance(result, dict) and "run_id" in result:
                        self.plan_outputs[result["run_id"]] = result
                    return result
            except Exception as e:  # Lambda reports the exception's class name as the error
                error = type(e).__name__
                for i, retrier in enumerate(state.get("Retry", [])):
                    if error in retrier["ErrorEquals"] or "States.ALL" in retrier["ErrorEquals"]:
                        attempts[i] = attempts.get(i, 0) + 1
                        if attempts[i] <= retrier.get("MaxAttempts", 3):
                            break
                        raise Failed(error, str(e)) from e
                else:
                    raise Failed(error, str(e)) from e

    def _map(self, state: Mapping[str, Any], data: Any) -> None:
        reader = state["ItemReader"]
        assert reader["Resource"] == "arn:aws:states:::s3:getObject"
        assert reader["ReaderConfig"]["InputType"] == "JSON"
        where = resolve_params(reader["Parameters"], data)
        items = json.loads(self.s3.get_object(Bucket=where["Bucket"], Key=where["Key"])["Body"].read())
        batcher = state["ItemBatcher"]
        size = batcher.get("MaxItemsPerBatch") or path_get(data, batcher["MaxItemsPerBatchPath"])
        batch_input = resolve_params(batcher.get("BatchInput", {}), data)
        assert state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
        path_get(data, state["MaxConcurrencyPath"])
        tolerated = path_get(data, state["ToleratedFailurePercentagePath"])
        results, failures = [], 0
        for start in range(0, len(items), size):
            event = {"Items": items[start : start + size], "BatchInput": batch_input}
            assert len(json.dumps(event)) <= batcher.get("MaxInputBytesPerBatch", 262144)
            try:
                results.append(self._run(state["ItemProcessor"], event))
            except Failed as e:
                failures += 1
                self.failures.append(e)
        batches = -(-len(items) // size)
        if failures and failures * 100 > tolerated * batches:
            raise Failed(
                "States.ExceedToleratedFailureThreshold",
                f"{failures} of {batches} batches failed, first: {self.failures[0]}",
            )
        writer = state.get("ResultWriter")
        if writer:
            out = resolve_params(writer["Parameters"], data)
            self.s3.put_object(
                Bucket=out["Bucket"], Key=out["Prefix"] + "/manifest.json", Body=json.dumps(results).encode()
            )

    def _run(self, machine: Mapping[str, Any], data: Any) -> Any:
        name = machine["StartAt"]
        while True:
            state = machine["States"][name]
            kind = state["Type"]
            if kind == "Task":
                result = self._task(name, state, data)
                data = result if state.get("ResultPath", "$") == "$" else data
            elif kind == "Map":
                self._map(state, data)
                assert "ResultPath" in state and state["ResultPath"] is None
            elif kind == "Choice":
                for choice in state["Choices"]:
                    if path_get(data, choice["Variable"]) == choice["BooleanEquals"]:
                        name = choice["Next"]
                        break
                else:
                    name = state["Default"]
                continue
            elif kind == "Succeed":
                return data
            elif kind == "Fail":
                raise Failed(state.get("Error", "Fail"), state.get("Cause", ""))
            else:
                raise AssertionError(f"state type {kind} is not interpreted here")
            if state.get("End"):
                return data
            name = state["Next"]

    def run(self, execution_input: Any) -> Any:
        return self._run(self.definition, execution_input)
