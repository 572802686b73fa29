"""The compact text form of a filter (terminal client, form fields), parsed into the JSON form that
:mod:`handler.filter_schema` validates::

    path:photos/2024/ ext:jpg,png taken:2024-01-01..2024-12-31 width:>=100 height:100..4000
    camera:"Canon EOS 5D" gps:yes meta.album:holidays meta.year:2023,2024

Space-separated ``name:value`` terms (shell-style quotes keep spaces); ``a,b`` means any of the values;
``path`` may repeat (any of the prefixes). Ranges: ``a..b``, ``a..``, ``..b``, ``>=a``, ``<=b``, ``>a``,
``<b`` or one value (``taken:2024-05-01`` is that day). Metadata values that read as numbers or
``true``/``false`` are compared as such.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from handler.core.filters import InvalidFilterError

__all__ = ["TERMS", "parse_compact"]

TERMS = ("path", "ext", "type", "taken", "width", "height", "camera", "gps", "meta.<name>")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]+)?")
_YES = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


def _typed(text: str) -> Any:
    if _NUMBER.fullmatch(text):
        return float(text) if "." in text else int(text)
    return {"true": True, "false": False}.get(text, text)


def _one_or_any(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else {"in": values}


def _split(value: str, term: str) -> list[str]:
    parts = [v.strip() for v in value.split(",")]
    if not all(parts):
        raise InvalidFilterError(f"filter term {term!r}: empty value")
    return parts


def _size(value: str, term: str) -> dict[str, int]:
    def num(text: str) -> int:
        if not text.isdigit() or len(text) > 10:
            raise InvalidFilterError(f"filter term {term!r}: {text!r} is not a whole number of pixels")
        return int(text)

    for op, key, shift in ((">=", "min", 0), ("<=", "max", 0), (">", "min", 1), ("<", "max", -1)):
        if value.startswith(op):
            return {key: max(0, num(value[len(op) :]) + shift)}
    if ".." in value:
        lo, _, hi = value.partition("..")
        rng = {k: num(v) for k, v in (("min", lo), ("max", hi)) if v}
        if not rng:
            raise InvalidFilterError(f"filter term {term!r}: give at least one bound")
        return rng
    n = num(value)
    return {"min": n, "max": n}


def _dates(value: str, term: str) -> dict[str, str]:
    if ".." in value:
        lo, _, hi = value.partition("..")
        rng = {k: v for k, v in (("from", lo), ("to", hi)) if v}
        if not rng:
            raise InvalidFilterError(f"filter term {term!r}: give at least one date")
        return rng
    for op, key in ((">=", "from"), ("<=", "to")):
        if value.startswith(op):
            return {key: value[len(op) :]}
    return {"from": value, "to": value}


def parse_compact(text: str) -> dict[str, Any]:
    """``path:photos/ ext:jpg,png ...`` -> ``{"path_prefix": "photos/", "ext": ["jpg", "png"], ...}``."""
    try:
        terms = shlex.split(text)
    except ValueError as e:
        raise InvalidFilterError(f"filter text: {e}") from None
    out: dict[str, Any] = {}
    for term in terms:
        name, sep, value = term.partition(":")
        if not sep or not value:
            raise InvalidFilterError(
                f"filter term {term[:60]!r}: expected name:value with a name among {', '.join(TERMS)}"
            )
        if name == "path":
            out.setdefault("path_prefix", []).append(value)
            continue
        key = "meta" if name.startswith("meta.") and len(name) > 5 else name
        if key in out and key != "meta":
            raise InvalidFilterError(f"filter term {name!r} given twice")
        if name in ("ext", "type"):
            out[name] = _split(value, term)
        elif name in ("width", "height"):
            out[name] = _size(value, term)
        elif name == "taken":
            out[name] = _dates(value, term)
        elif name == "camera":
            out[name] = _one_or_any(_split(value, term))
        elif name == "gps":
            if value.lower() not in _YES:
                raise InvalidFilterError(f"filter term {term!r}: use gps:yes or gps:no")
            out[name] = _YES[value.lower()]
        elif key == "meta":
            field = name[5:]
            if field in out.get("meta", {}):
                raise InvalidFilterError(f"filter term {name!r} given twice")
            out.setdefault("meta", {})[field] = _one_or_any([_typed(v) for v in _split(value, term)])
        else:
            raise InvalidFilterError(f"unknown filter term {name[:40]!r}; known: {', '.join(TERMS)}")
    return out
