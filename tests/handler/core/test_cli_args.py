"""The argparse value types shared by clip-search and index_builder: what they accept, and the one-line
usage error (exit 2) for what they refuse."""

from __future__ import annotations

import argparse

import pytest

from handler.core.cli_args import positive_int, unit_interval


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("32", 32), (" 7 ", 7)])
def test_positive_int_accepts(value: str, expected: int) -> None:
    assert positive_int(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "'0' must be >= 1"),
        ("-3", "'-3' must be >= 1"),
        ("2.5", "not an integer"),
        ("x", "not an integer"),
    ],
)
def test_positive_int_refuses(value: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        positive_int(value)


@pytest.mark.parametrize(("value", "expected"), [("1", 1.0), ("0.95", 0.95), ("1e-3", 0.001)])
def test_unit_interval_accepts(value: str, expected: float) -> None:
    assert unit_interval("a recall")(value) == expected


@pytest.mark.parametrize("value", ["0", "-0.5", "1.0001", "nan", "inf", "abc", ""])
def test_unit_interval_refuses(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"^a recall must be a number in \(0, 1\], got '"):
        unit_interval("a recall")(value)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--n", "0"], "argument --n: '0' must be >= 1"),
        (["--t", "1.5"], "argument --t: a threshold must be a number in (0, 1], got '1.5'"),
    ],
)
def test_argparse_reports_one_usage_line_and_exits_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("--n", type=positive_int)
    p.add_argument("--t", type=unit_interval("a threshold"))
    with pytest.raises(SystemExit) as e:
        p.parse_args(argv)
    assert e.value.code == 2 and fragment in capsys.readouterr().err


@pytest.mark.parametrize(
    ("search_argv", "builder_argv", "fragment"),
    [
        (["-k", "0"], ["--batch-size", "0"], "'0' must be >= 1"),
        (["--threads", "x"], ["--threads", "x"], "'x' is not an integer"),
        (["--dedupe", "1.5"], ["--duplicate-threshold", "1.5"], "must be a number in (0, 1], got '1.5'"),
    ],
)
def test_clip_search_and_index_builder_refuse_alike(
    search_argv: list[str], builder_argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both command lines parse counts and thresholds with these types (they had a copy each, worded
    differently)."""
    from handler.search import build_parser as search_parser
    from index_builder.cli import build_parser as builder_parser

    for parser, argv in (
        (search_parser(), ["a query", *search_argv]),
        (builder_parser(), ["build", "--source", "s", "--out", "o", *builder_argv]),
    ):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv)
        assert e.value.code == 2 and fragment in capsys.readouterr().err
