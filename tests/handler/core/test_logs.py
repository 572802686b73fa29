"""handler.core.logs: one logging path (stdlib logging) for events, library loggers and CLI messages."""

from __future__ import annotations

import io
import json
import logging

import pytest

from handler.core.logs import configure_cli_logging, configure_logging, emit_metrics, log_event


@pytest.fixture
def restore_levels():
    yield
    configure_logging("INFO", loggers=())


def test_log_event_is_a_logging_record_rendered_as_one_json_line(capsys, restore_levels) -> None:
    seen: list[logging.LogRecord] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    spy = Spy()
    logger = logging.getLogger("clip_search.events")
    logger.addHandler(spy)
    try:
        log_event("request", status=200, path="/x")
    finally:
        logger.removeHandler(spy)
    assert [r.msg for r in seen] == ["request"]  # it went through stdlib logging
    line = json.loads(capsys.readouterr().out)
    assert {k: line[k] for k in ("level", "event", "status", "path")} == {
        "level": "INFO",
        "event": "request",
        "status": 200,
        "path": "/x",
    }
    configure_logging("WARNING", loggers=())
    log_event("quiet")
    log_event("loud", level="ERROR")
    assert [json.loads(x)["event"] for x in capsys.readouterr().out.splitlines()] == ["loud"]


def test_library_loggers_and_metrics_share_the_stream(restore_levels) -> None:
    buf = io.StringIO()
    configure_logging("INFO", loggers=("handler.test_logs",), stream=buf)
    logging.getLogger("handler.test_logs").warning("disk %s", "full")
    log_event("done", n=1)
    emit_metrics({"Latency": (1.5, "Milliseconds")})
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    configure_logging("INFO", loggers=())
    assert lines[0]["message"] == "disk full" and lines[0]["logger"] == "handler.test_logs"
    assert lines[1]["event"] == "done" and lines[2]["Latency"] == 1.5


def test_cli_logging_is_plain_text_on_stderr(capsys) -> None:
    name = "index_builder.test_logs_cli"
    configure_logging("INFO", loggers=(name,))  # a JSON route is replaced by the CLI's
    configure_cli_logging(name)
    configure_cli_logging(name)  # idempotent: one handler
    logging.getLogger(name).info("built v1")
    logging.getLogger(name).warning("x.jpg: truncated")
    out, err = capsys.readouterr()
    assert out == "" and err == "built v1\nwarning: x.jpg: truncated\n"
