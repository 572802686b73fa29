"""``python -m index_builder duplicates DEST``: print the near-duplicate groups of DEST's current version
(found by the builder, see :mod:`handler.core.duplicates`), as text or one JSON object.

Exit codes: 0 printed; 1 no index at DEST, or its version was built without the duplicate finder
(``build --no-duplicates``, or a builder older than it; rebuild to add them), or a file of it is broken.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from typing import Any

from handler.core.cli_args import positive_int, unit_interval
from handler.core.duplicates import DEFAULT_DUPLICATE_THRESHOLD, DUPLICATES_FILE, parse_duplicates
from handler.core.errors import ConfigError, SearchError
from handler.core.index_format import POINTER, read_manifest, read_pointer, version_prefix
from handler.core.storage import Store, open_store
from index_builder.errors import BuildError, UsageError
from index_builder.shard_write import version_items

__all__ = ["add_build_options", "add_parser", "run", "version_groups"]


def add_build_options(b: argparse.ArgumentParser) -> None:
    """``build --duplicates/--no-duplicates --duplicate-threshold COS``."""
    b.add_argument(
        "--duplicates",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="find the near-duplicate groups of the version with its HNSW graph (default: on; "
        "`duplicates DEST` and GET /duplicates list them)",
    )
    b.add_argument(
        "--duplicate-threshold",
        type=unit_interval("a cosine similarity"),
        default=DEFAULT_DUPLICATE_THRESHOLD,
        metavar="COS",
        help=f"cosine similarity from which two images are near-duplicates (default "
        f"{DEFAULT_DUPLICATE_THRESHOLD})",
    )


def add_parser(sub: Any) -> None:
    d = sub.add_parser(
        "duplicates",
        help="list the near-duplicate groups of the published version",
        description="Print the near-duplicate groups the builder found in DEST's current version: "
        "each group's items (the representative first) with their similarity to it.",
    )
    d.add_argument("dest", metavar="DEST", help="index directory or s3://bucket/prefix")
    d.add_argument("--limit", type=positive_int, default=None, metavar="N", help="print the first N groups")
    d.add_argument("--offset", type=int, default=0, metavar="N", help="skip the first N groups")
    d.add_argument("--json", action="store_true", help="exactly one JSON object on stdout")


def _checked(store: Store, key: str, entry: dict[str, Any]) -> bytes:
    data = store.read_bytes(key)
    if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise BuildError(f"{store.uri_for(key)} does not match the manifest's size / sha256")
    return data


def version_groups(uri: str) -> dict[str, Any]:
    """``{"uri", "version", "threshold", "k", "groups"}`` of DEST's current version; each group
    ``{"count", "score", "items": [{"id", "uri", "score"}]}``. :class:`BuildError` when there is none."""
    try:
        store = open_store(uri)
    except ConfigError as e:
        raise UsageError(e.message) from None
    try:
        pointer = read_pointer(store)
        if pointer is None:
            raise BuildError(f"no index at {store.uri}: {POINTER} is missing")
        version = pointer["version"]
        manifest = read_manifest(store, version, pointer["manifest_sha256"])
        files, prefix = manifest["files"], version_prefix(version)
        if DUPLICATES_FILE not in files:
            raise BuildError(
                f"version {version} of {store.uri} was built without the duplicate finder; rebuild with "
                "`python -m index_builder build ... --duplicates` to find them"
            )
        raw = _checked(store, prefix + DUPLICATES_FILE, files[DUPLICATES_FILE])
        groups = parse_duplicates(raw.decode("utf-8"), store.uri_for(prefix + DUPLICATES_FILE))
        rows, _ = version_items(store, manifest)  # every shard's items, checked against the manifest
        uris = {row["id"]: row.get("uri") for row in rows}
    except SearchError as e:
        raise BuildError(f"{store.uri}: {e.message}") from None
    except (ValueError, TypeError, KeyError) as e:
        raise BuildError(f"{store.uri}: version {version} has unreadable files ({e})") from None
    setting = manifest.get("duplicates") or {}
    return {
        "uri": store.uri,
        "version": version,
        "threshold": setting.get("threshold"),
        "k": setting.get("k"),
        "groups": [
            {
                "count": len(g["items"]),
                "score": g["score"],
                "items": [
                    {"id": i, "uri": uris.get(i), "score": s}
                    for i, s in zip(g["items"], g["scores"], strict=True)
                ],
            }
            for g in groups
        ],
    }


def run(args: argparse.Namespace) -> int:
    if args.offset < 0:
        raise UsageError(f"--offset {args.offset}: must be >= 0")
    found = version_groups(args.dest)
    total = len(found["groups"])
    end = None if args.limit is None else args.offset + args.limit
    shown = found["groups"][args.offset : end]
    if args.json:
        print(json.dumps({**found, "total": total, "offset": args.offset, "groups": shown}))
        return 0
    print(
        f"{found['uri']} version {found['version']}: {total} group(s) of near-duplicates "
        f"(cosine >= {found['threshold']}, {found['k']} neighbours per item)"
    )
    for n, g in enumerate(shown, args.offset + 1):
        print(f"group {n}: {g['count']} items, lowest similarity {g['score']:.4f}")
        for item in g["items"]:
            print(f"  {item['score']:.4f}  {item['uri'] or item['id']}")
    return 0
