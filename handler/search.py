"""Terminal client, torch-free (``python -m handler.search``, console script ``clip-search``).

Searches a local or ``s3://`` index with a model bundle, no server needed, or a deployed endpoint (``--url``),
and prints ranked paths with scores (``--json``: one JSON object). A query is one or more terms joined by
``+`` / ``-`` (rclip's syntax), each a text or an image path, with an optional weight after a colon:

    python -m handler.search "a beach" + "sunset:0.5" - "people" --index DIR --bundle DIR
    python -m handler.search photos/cat.jpg + "at night" --url https://.../prod --api-key KEY
    python -m handler.search --image cat.jpg --id set_a/img_00001.jpg --dedupe --json

Local searches embed and combine terms with the service's code (:mod:`handler.core.query`,
:mod:`handler.core.dedupe`); remote ones send the same ``terms`` to ``POST /search``. Bad input prints one
line on stderr and exits 1 (2 for a usage error).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handler.core.cli_args import positive_int, unit_interval
from handler.core.dedupe import DEFAULT_THRESHOLD
from handler.core.errors import SearchError
from handler.core.query import MAX_TERMS, MAX_WEIGHT

__all__ = ["CliTerm", "main", "parse_query"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
# "sunset:0.5", "sunset:-2", "sunset:1e-1" (no space before the number: "time: 12" is a text)
_WEIGHTED = re.compile(r"^(.*\S):([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)$", re.DOTALL)


class UsageError(Exception):
    """Bad command-line input: one line, exit status 1."""


@dataclass(frozen=True)
class CliTerm:
    """``kind``: text, image (``value`` a path) or id."""

    kind: str
    value: str
    weight: float = 1.0


def _weighted(token: str) -> tuple[str, float]:
    """``"sunset:0.5"`` -> ("sunset", 0.5); anything else (an existing file too) -> (token, 1.0)."""
    match = _WEIGHTED.match(token)
    if match is None or Path(token).is_file():
        return token, 1.0
    weight = float(match.group(2))
    if not math.isfinite(weight) or abs(weight) > MAX_WEIGHT:
        raise UsageError(f"weight of {match.group(1)!r} must be a finite number within +-{MAX_WEIGHT:g}")
    return match.group(1), weight


def _is_image(value: str) -> bool:
    return Path(value).suffix.lower() in IMAGE_SUFFIXES and Path(value).is_file()


def parse_query(tokens: Sequence[str], images: Sequence[str] = (), ids: Sequence[str] = ()) -> list[CliTerm]:
    """``["a beach", "+", "sunset:0.5", "-", "people"]`` -> terms; a token naming an image file is an image
    term. Adjacent terms add up; ``images`` (``--image``) and ``ids`` (``--id``) are added (``PATH:W``,
    ``ID:W`` weighted like texts)."""
    terms: list[CliTerm] = []
    sign: float | None = None
    for token in tokens:
        if token in ("+", "-"):
            if sign is not None:
                raise UsageError(f"two operators in a row before {token!r}: put a term between them")
            sign = -1.0 if token == "-" else 1.0
            continue
        value, weight = _weighted(token)
        if not value.strip():
            raise UsageError("a query term is empty")
        terms.append(CliTerm("image" if _is_image(value) else "text", value, (sign or 1.0) * weight))
        sign = None
    if sign is not None:
        raise UsageError("the query ends with an operator: give a term after '+' or '-'")
    for path in images:
        value, weight = _weighted(path)
        if not Path(value).is_file():
            raise UsageError(f"--image {value}: no such file")
        terms.append(CliTerm("image", value, weight))
    for item in ids:
        value, weight = _weighted(item)
        terms.append(CliTerm("id", value, weight))
    if not terms:
        raise UsageError("give a query: texts and image paths joined by + or -, --image PATH or --id ID")
    if len(terms) > MAX_TERMS:
        raise UsageError(f"at most {MAX_TERMS} terms per query, got {len(terms)}")
    if not any(t.weight for t in terms):
        raise UsageError("the weights of the terms are all zero")
    return terms


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None


# -- local search -------------------------------------------------------------------------------------------


def search_local(args: argparse.Namespace, terms: list[CliTerm]) -> dict[str, Any]:
    """Load the bundle and the index (fingerprints checked), embed, combine, rank."""
    from handler.core.dedupe import ranked
    from handler.core.index import load_index
    from handler.core.query import Term, embed_terms
    from handler.core.runtime import load_bundle

    if not args.index or not args.bundle:
        raise UsageError("give --index and --bundle (or env INDEX_URI and MODEL_URI), or --url")
    cache = Path(args.cache_dir) if args.cache_dir else None
    emb = load_bundle(args.bundle, precision=args.precision, threads=args.threads, cache_dir=cache)
    idx = load_index(
        args.index, expected_fingerprint=emb.model_fingerprint, cache_dir=cache / "index" if cache else None
    )
    core_terms = [
        Term(t.kind, _read(t.value) if t.kind == "image" else t.value, t.weight, field=f"term {i + 1}")
        for i, t in enumerate(terms)
    ]
    query = embed_terms(core_terms, idx, emb, args.language)
    for described, t in zip(query.terms, terms, strict=True):
        if t.kind == "image":
            described["path"] = t.value
    target: Any = idx
    exclude = query.exclude
    if args.filter:  # only matching items, as POST /search does
        from handler.core.filtered_search import FilteredIndex
        from handler.core.filters import compile_mask
        from handler.filter_schema import parse_filter

        mask = compile_mask(idx, parse_filter(args.filter))
        mask[list(exclude)] = False
        target, exclude = FilteredIndex(idx, mask), frozenset()
    hits = ranked(
        target,
        query.vector,
        args.k,
        args.offset,
        min_score=args.min_score,
        exclude=exclude,
        dedupe=args.dedupe,
        kind=query.kind,
    )
    results = []
    for hit, absorbed in hits:
        item = hit.item
        result = {"id": item.get("id"), "uri": item.get("uri"), "score": hit.score}
        result["metadata"] = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
        if args.dedupe is not None:
            result["duplicates"] = [d.item.get("id") for d in absorbed]
        results.append(result)
    return {"results": results, "query": {"terms": query.terms}, "index_version": idx.version}


# -- remote search ------------------------------------------------------------------------------------------


def request_body(args: argparse.Namespace, terms: list[CliTerm]) -> dict[str, Any]:
    """The ``POST /search`` JSON body of a query."""
    out: list[dict[str, Any]] = []
    for t in terms:
        if t.kind == "image":
            out.append({"image": base64.b64encode(_read(t.value)).decode("ascii"), "weight": t.weight})
        else:
            out.append({t.kind: t.value, "weight": t.weight})
    body: dict[str, Any] = {"terms": out, "k": args.k, "offset": args.offset}
    if args.min_score is not None:
        body["min_score"] = args.min_score
    if args.dedupe is not None:
        body["dedupe"] = {"threshold": args.dedupe}
    if args.language:
        body["language"] = args.language
    if args.filter:
        body["filter"] = args.filter  # the server parses the text form (or JSON) itself
    return body


def search_remote(args: argparse.Namespace, terms: list[CliTerm]) -> dict[str, Any]:
    """``POST {url}/search`` (x-api-key from --api-key or env API_KEY); server errors -> one line."""
    url = args.url.rstrip("/") + "/search"
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url must be an http(s) URL, got {args.url!r}")
    headers = {"content-type": "application/json", "accept": "application/json"}
    key = args.api_key or os.environ.get("API_KEY")
    if key:
        headers["x-api-key"] = key
    data = json.dumps(request_body(args, terms)).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except urllib.error.HTTPError as e:
        try:
            error = json.loads(e.read())["error"]
            detail = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            detail = e.reason
        raise UsageError(f"{url} answered {e.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise UsageError(f"cannot query {url}: {reason}") from None


# -- command line -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m handler.search",
        description="Search a CLIP image index from the terminal: local or s3:// (no server), or --url.",
        epilog='example: python -m handler.search "a beach" + "sunset:0.5" - "people" --index DIR --bundle B',
    )
    p.add_argument("query", nargs="*", help="texts and image paths joined by + / -; TERM:WEIGHT weighs one")
    p.add_argument("--image", action="append", default=[], metavar="PATH", help="an image term (repeatable)")
    p.add_argument("--id", action="append", default=[], metavar="ID", help="an indexed item as a term")
    p.add_argument("--index", default=os.environ.get("INDEX_URI"), help="index dir or s3:// (env INDEX_URI)")
    p.add_argument("--bundle", default=os.environ.get("MODEL_URI"), help="model bundle (env MODEL_URI)")
    p.add_argument("--url", help="query this deployed service instead (POST /search)")
    p.add_argument("--api-key", help="x-api-key for --url (default: env API_KEY)")
    p.add_argument("-k", "--k", type=positive_int, default=10, help="how many results (default 10)")
    p.add_argument("--offset", type=int, default=0, help="skip this many results")
    p.add_argument("--min-score", type=float, help="drop results scoring below this cosine")
    p.add_argument(
        "--dedupe",
        nargs="?",
        const=DEFAULT_THRESHOLD,
        type=unit_interval("a cosine threshold"),
        metavar="THRESHOLD",
        help=f"collapse near-duplicates (cosine >= THRESHOLD, default {DEFAULT_THRESHOLD})",
    )
    p.add_argument(
        "--filter",
        metavar="SPEC",
        help="only items matching it, e.g. 'path:photos/2024/ ext:jpg,png taken:2024-06-01..2024-08-31 "
        "width:>=1000' (or a JSON object; docs/api.md, Filters)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--language", help="source language of the texts (NLLB bundles)")
    p.add_argument("--precision", default=os.environ.get("PRECISION", "fp32"), help="fp32, fp16 or int8")
    p.add_argument("--threads", type=positive_int, help="onnxruntime threads (default: all cores)")
    p.add_argument("--cache-dir", help="where s3:// bundles and indexes are cached")
    p.add_argument("--timeout", type=float, default=60.0, help="--url request timeout in seconds")
    return p


def _print(body: dict[str, Any]) -> None:
    results = body.get("results", [])
    if not results:
        print("no results")
    for r in results:
        where = r.get("uri") or r.get("id")
        extra = f"  (+{len(r['duplicates'])} duplicates)" if r.get("duplicates") else ""
        print(f"{r['score']:.4f}  {where}{extra}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    try:
        if args.offset < 0:
            raise UsageError(f"--offset must be >= 0, got {args.offset}")
        if args.min_score is not None and not -1 <= args.min_score <= 1:
            raise UsageError(f"--min-score must be within -1..1, got {args.min_score}")
        terms = parse_query(args.query, args.image, args.id)
        body = search_remote(args, terms) if args.url else search_local(args, terms)
    except (UsageError, SearchError, OSError) as e:
        print(f"error: {getattr(e, 'message', None) or e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, ensure_ascii=False))
    else:
        _print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
