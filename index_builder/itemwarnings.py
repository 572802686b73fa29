"""Warnings raised while one item is prepared, captured for that item (thread-safe).

``warnings.catch_warnings`` swaps process-global state and is not thread-safe, and the decode runs on a
thread pool. Instead, while any capture is active, one ``showwarning`` hook is installed (reference
counted) that hands a warning to the capture of the *thread* that raised it (a thread-local list) and
passes warnings of other threads on unchanged. A repeated warning (the same Pillow line, another file)
must reach the hook each time, not once per location: Pillow's UserWarnings get an ``always`` filter in
front (overriding a "default"/"once" filter, e.g. ``python -W default``), any other warning one appended
after the existing filters (so an "error" or "ignore" set by the user still applies to those).
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["capture_item_warnings"]

_local = threading.local()
_lock = threading.Lock()
_active = 0
_previous: Any = None
_PIL_FILTER = ("always", None, UserWarning, re.compile(r"PIL\."), 0)
_FILTER = ("always", None, Warning, None, 0)


def _hook(
    message: Any,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    caught = getattr(_local, "caught", None)
    if caught is not None:
        caught.append(f"{category.__name__}: {message}")
    elif _previous is not None and _previous is not warnings._showwarning_orig:  # type: ignore[attr-defined]
        _previous(message, category, filename, lineno, file, line)
    else:  # the default path (also what pytest's recorder replaces)
        warnings._showwarnmsg_impl(  # type: ignore[attr-defined]
            warnings.WarningMessage(message, category, filename, lineno, file, line)
        )


def _install() -> None:
    global _active, _previous
    with _lock:
        if _active == 0:
            _previous = warnings.showwarning
            warnings.showwarning = _hook
            warnings.filters.insert(0, _PIL_FILTER)  # type: ignore[attr-defined]
            warnings.filters.append(_FILTER)  # type: ignore[attr-defined]
            warnings._filters_mutated()  # type: ignore[attr-defined]
        _active += 1


def _uninstall() -> None:
    global _active, _previous
    with _lock:
        _active -= 1
        if _active == 0:
            if warnings.showwarning is _hook:
                warnings.showwarning = _previous
            _previous = None
            for entry in (_PIL_FILTER, _FILTER):
                if entry in warnings.filters:  # type: ignore[attr-defined]
                    warnings.filters.remove(entry)  # type: ignore[attr-defined]
            warnings._filters_mutated()  # type: ignore[attr-defined]


@contextmanager
def capture_item_warnings() -> Iterator[list[str]]:
    """``with capture_item_warnings() as caught:`` - the warnings this thread raises inside the block are
    appended to ``caught`` as ``"Category: message"`` instead of being printed."""
    caught: list[str] = []
    _install()
    outer = getattr(_local, "caught", None)
    _local.caught = caught
    try:
        yield caught
    finally:
        _local.caught = outer
        _uninstall()
