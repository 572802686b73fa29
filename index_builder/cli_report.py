"""What ``python -m index_builder build`` prints: one JSON object (``--json``), or the skipped files on
stderr and one summary line on stdout; for the serial build and for ``--parallel N``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from index_builder.options import BuildResult

__all__ = ["print_parallel", "print_result"]


def print_result(args: argparse.Namespace, result: BuildResult) -> None:
    """The serial build's result: one JSON object (``--json``), or the errors (stderr) and a summary line."""
    from index_builder.options import format_skipped

    s = result.stats
    if args.json:
        print(
            json.dumps(
                {
                    "version": result.version,
                    "published": result.published,
                    "out": args.out,
                    "stats": s,
                    "seconds": round(result.seconds, 3),
                    "images_per_s": round(result.images_per_s, 2),
                    "pruned": result.pruned,
                    "previous_version": result.previous_version,
                    "errors": result.errors,
                    "warnings": result.warnings,
                    "skipped": result.skipped,
                }
            )
        )
        return
    if not args.quiet:
        for e in result.errors[:20]:
            print(f"skipped {e['id']}: {e['reason']}: {e['message']}", file=sys.stderr)
        if len(result.errors) > 20:
            print(
                f"... and {len(result.errors) - 20} more (see errors.jsonl of the version)", file=sys.stderr
            )
    rate = f", {result.images_per_s:.1f} images/s" if s["embedded"] else ""
    skipped = f"; skipped {format_skipped(result.skipped)} (not images)" if result.skipped else ""
    head = (
        f"published version {result.version} to {args.out}"
        if result.published
        else f"no changes: {args.out} stays at version {result.version}, nothing published"
    )
    print(
        f"{head}: {s['count']} items "
        f"(embedded {s['embedded']}, resumed {s['resumed']}, unchanged {s['unchanged']}, reused "
        f"{s['reused']}, "
        f"added {s['added']}, changed {s['changed']}, removed {s['removed']}, errors {s['errors']}) "
        f"in {result.seconds:.1f}s{rate}{skipped}"
    )
    if result.pruned and not args.quiet:
        print(f"pruned {len(result.pruned)} old version(s): {', '.join(result.pruned)}", file=sys.stderr)


def print_parallel(args: argparse.Namespace, r: dict[str, Any]) -> None:
    """The summary of :func:`index_builder.parallel.build_parallel`, printed like :func:`print_result`."""
    from index_builder.options import format_skipped

    keys = (
        "version",
        "published",
        "stats",
        "pruned",
        "previous_version",
        "errors",
        "warnings",
        "skipped",
        "seconds",
    )
    if args.json:  # the serial build's keys
        embedded, seconds = (r.get("stats") or {}).get("embedded", 0), r.get("embed_seconds") or 0.0
        rate = round(embedded / seconds, 2) if embedded and seconds > 0 else 0.0
        print(json.dumps({k: r.get(k) for k in keys} | {"out": args.out, "images_per_s": rate}))
        return
    skipped = f"; skipped {format_skipped(r['skipped'])} (not images)" if r.get("skipped") else ""
    if not r["published"]:
        print(f"nothing to do: {args.out} is up to date (version {r['version']}){skipped}")
        return
    if not args.quiet:
        for w in r.get("warnings", [])[:20]:
            print(f"warning: {w['id']}: {w['message']}", file=sys.stderr)
        for e in r["errors"][:20]:
            print(f"skipped {e['id']}: {e['reason']}: {e['message']}", file=sys.stderr)
        if len(r["errors"]) > 20:
            print(f"... and {len(r['errors']) - 20} more (see errors.jsonl of the version)", file=sys.stderr)
    s = r["stats"]
    print(
        f"published version {r['version']} to {args.out}: {s.get('count')} items (embedded "
        f"{s.get('embedded')}, unchanged {s.get('unchanged')}, added {s.get('added')}, changed "
        f"{s.get('changed')}, removed {s.get('removed')}, errors {s.get('errors')}) in {r['seconds']:.1f}s "
        f"with {args.parallel} worker process(es){skipped}"
    )
