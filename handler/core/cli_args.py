"""Argparse value types shared by the command lines (``clip-search`` and ``python -m index_builder``).

A bad value raises :class:`argparse.ArgumentTypeError`: argparse prints ``argument --x: MESSAGE`` and exits 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["positive_int", "unit_interval"]


def positive_int(value: str) -> int:
    """An integer >= 1 (counts, sizes, threads, ``-k``)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be >= 1")
    return n


def unit_interval(what: str) -> Callable[[str], float]:
    """The type of a number in (0, 1] (a cosine threshold, a recall target); NaN and infinities are refused
    with a message naming ``what`` it is."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not 0.0 < number <= 1.0:  # False for NaN
            raise argparse.ArgumentTypeError(f"{what} must be a number in (0, 1], got {value!r}")
        return number

    return parse
