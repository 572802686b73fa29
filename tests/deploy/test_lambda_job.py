"""index_builder/lambda_job.py: the rebuild job's Lambda entry point (event -> CLI argv -> main(argv))."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from index_builder import lambda_job
from index_builder.lambda_job import RebuildFailed, build_argv, handler

ENV = {
    "SOURCE_URI": "s3://b/collection",
    "MODEL_URI": "s3://b/models/clip",
    "INDEX_URI": "s3://b/indexes/clip",
    "PRECISION": "fp32",
    "KEEP_VERSIONS": "3",
}
BASE = [
    "build",
    "--source",
    "s3://b/collection",
    "--bundle",
    "s3://b/models/clip",
    "--out",
    "s3://b/indexes/clip",
]


def test_default_event_builds_from_the_environment() -> None:
    assert build_argv({}, ENV) == [*BASE, "--precision", "fp32", "--keep-versions", "3"]
    assert build_argv(None, ENV) == build_argv({}, ENV)
    assert build_argv("{}", ENV) == build_argv({}, ENV)
    minimal = {k: ENV[k] for k in ("SOURCE_URI", "MODEL_URI", "INDEX_URI")}
    assert build_argv({}, minimal) == BASE


def test_event_overrides() -> None:
    event = {
        "source": "s3://b/other",
        "full": True,
        "workers": 4,
        "precision": "int8",
        "keep_versions": 5,
        "strict": True,
    }
    assert build_argv(event, ENV) == [
        "build",
        "--source",
        "s3://b/other",
        "--bundle",
        "s3://b/models/clip",
        "--out",
        "s3://b/indexes/clip",
        "--precision",
        "int8",
        "--workers",
        "4",
        "--keep-versions",
        "5",
        "--full",
        "--strict",
    ]
    assert "--full" not in build_argv({"full": False}, ENV)
    assert build_argv(json.dumps({"full": True}), ENV)[-1] == "--full"


def test_eventbridge_envelope_is_unwrapped() -> None:
    scheduled = {
        "version": "0",
        "id": "x",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-01-01T00:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/r"],
        "detail": {},
    }
    assert build_argv(scheduled, ENV) == build_argv({}, ENV)


@pytest.mark.parametrize(
    "event, message",
    [
        ({"ful": True}, "unknown event key"),
        ({"out": "s3://b/elsewhere"}, "unknown event key"),
        ({"full": "yes"}, "true or false"),
        ({"workers": 0}, "positive integer"),
        ({"workers": True}, "positive integer"),
        ({"source": ""}, "non-empty string"),
        ({"precision": "fp64"}, "must be one of"),
        ([1, 2], "JSON object"),
        ("not json", "not JSON"),
    ],
)
def test_bad_events_are_refused(event: object, message: str) -> None:
    with pytest.raises(RebuildFailed, match=message):
        build_argv(event, ENV)


def test_missing_environment_is_refused() -> None:
    with pytest.raises(RebuildFailed, match="INDEX_URI is not set"):
        build_argv({}, {k: v for k, v in ENV.items() if k != "INDEX_URI"})
    with pytest.raises(RebuildFailed, match="KEEP_VERSIONS"):
        build_argv({}, {**ENV, "KEEP_VERSIONS": "many"})
    # SOURCE_URI is only needed when the event gives no source
    env = {k: v for k, v in ENV.items() if k != "SOURCE_URI"}
    assert build_argv({"source": "s3://b/x"}, env)[2] == "s3://b/x"


def test_cli_failure_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lambda_job, "run_cli", lambda argv: 1)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RebuildFailed, match="exited with status 1"):
        handler({})


def test_argparse_exit_becomes_a_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lambda_job.run_cli(["build", "--no-such-flag"]) == 2


def test_job_builds_publishes_and_rebuilds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, deploy_collection: Path
) -> None:
    """The handler runs the real CLI: a first build, an incremental one, a full one; each publishes."""
    from handler.core.index import load_index
    from handler.core.index_format import read_pointer

    index = tmp_path / "index"
    monkeypatch.setenv("SOURCE_URI", str(deploy_collection))
    monkeypatch.setenv("MODEL_URI", str(tiny_bundle))
    monkeypatch.setenv("INDEX_URI", str(index))
    monkeypatch.setenv("PRECISION", "fp32")
    monkeypatch.setenv("KEEP_VERSIONS", "2")
    monkeypatch.setenv("WORKERS", "2")

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 900_000

    first = handler({}, Context())
    assert first["ok"] is True and first["index_uri"] == str(index)
    assert first["version"] == read_pointer(str(index))["version"]
    assert "--workers" in first["argv"] and "--full" not in first["argv"]
    loaded = load_index(str(index))
    assert len(loaded) == 12

    second = handler({"full": False})
    assert second["version"] == read_pointer(str(index))["version"]
    third = handler({"full": True})
    assert "--full" in third["argv"]
    assert third["version"] == read_pointer(str(index))["version"]
    assert len(load_index(str(index))) == 12
    versions = sorted(p.name for p in (index / "versions").iterdir())
    assert len(versions) <= 2 and third["version"] in versions  # KEEP_VERSIONS=2

    with pytest.raises(RebuildFailed):
        handler({"source": str(tmp_path / "no-such-folder")})
    assert read_pointer(str(index))["version"] == third["version"], "a failed build publishes nothing"


def test_run_cli_never_imports_the_cli_entry_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 #7: the fallback imported ``index_builder.__main__``, which runs the CLI (with Lambda's argv)
    at import time. Without ``index_builder.cli.main`` the job now fails instead."""
    import sys
    import types

    ran: list[object] = []
    entry = types.ModuleType("index_builder.__main__")
    entry.main = lambda *a, **k: ran.append(a) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "index_builder.cli", types.ModuleType("index_builder.cli"))  # no main
    monkeypatch.setitem(sys.modules, "index_builder.__main__", entry)
    with pytest.raises(ImportError):
        lambda_job.run_cli(["build"])
    assert ran == []


def test_job_logs_are_json_lines(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12 #6: the job's events go through handler.core.logs like the service's."""
    monkeypatch.setattr(lambda_job, "run_cli", lambda argv: 1)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RebuildFailed):
        handler({})
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["event"], x["level"]) for x in lines] == [
        ("rebuild_start", "INFO"),
        ("rebuild_failed", "ERROR"),
    ]
    assert lines[1]["rc"] == 1 and "time" in lines[1]
