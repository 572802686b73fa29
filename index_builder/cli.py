"""``python -m index_builder {build,import-embeddings,info,verify,duplicates}``: the offline index job.

Each sub-command's options and code live in its module (:mod:`~index_builder.cli_build`,
:mod:`~index_builder.precomputed`, :mod:`~index_builder.duplicates`); ``info`` and ``verify`` are here.

Exit codes: 0 success; 1 the build, info or verify failed (message on stderr, naming what and what to
do; ``--strict`` with unindexable files; verify found a mismatch); 2 bad command-line values;
130 interrupted (re-run to resume). Only heavy imports (torch) on the ``--backend torch`` path.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from index_builder import cli_build, duplicates, precomputed

    p = argparse.ArgumentParser(
        prog="python -m index_builder", description="Build, inspect and verify CLIP image search indexes."
    )
    sub = p.add_subparsers(
        dest="command", required=True, metavar="{build,import-embeddings,info,verify,duplicates}"
    )

    cli_build.add_parser(sub)
    precomputed.add_parser(sub)
    i = sub.add_parser("info", help="show the published version", description="Show what DEST publishes.")
    i.add_argument("dest", metavar="DEST")
    i.add_argument("--json", action="store_true", help="exactly one JSON object on stdout")

    v = sub.add_parser(
        "verify",
        help="check checksums and consistency",
        description="Check the pointer, manifest, every file's checksum and the model fingerprint.",
    )
    v.add_argument("dest", metavar="DEST")
    v.add_argument("--bundle", metavar="BUNDLE", help="also check the model fingerprint against this bundle")
    v.add_argument(
        "--all", action="store_true", help="verify every complete version, not only the current one"
    )
    v.add_argument("--quiet", action="store_true", help="print problems only")
    duplicates.add_parser(sub)
    return p


def _cmd_info(args: argparse.Namespace) -> int:
    from index_builder.inspection import format_info, index_info

    info = index_info(args.dest)
    print(json.dumps(info) if args.json else format_info(info))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from index_builder.inspection import verify_index

    problems, notes = verify_index(args.dest, args.bundle, all_versions=args.all)
    if not args.quiet:
        for note in notes:
            print(f"ok    {note}")
    for problem in problems:
        print(f"FAIL  {problem}", file=sys.stderr)
    if problems:
        print(f"verify: {len(problems)} problem(s) in {args.dest}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"verify: {args.dest} is intact")
    return 0


def main(argv: Sequence[str] | None = None, *, cli_logging: bool = True) -> int:
    """``cli_logging=False``: keep the caller's logging set-up (the Lambda job's JSON lines)."""
    args = build_parser().parse_args(argv)
    from handler.core.errors import SearchError
    from handler.core.logs import configure_cli_logging

    if cli_logging:
        configure_cli_logging("index_builder")
    from index_builder.errors import BuildError

    try:
        from index_builder import cli_build, duplicates
        from index_builder.precomputed import run_cli as _cmd_import

        commands = {
            "build": cli_build.run,
            "import-embeddings": _cmd_import,
            "info": _cmd_info,
            "verify": _cmd_verify,
            "duplicates": duplicates.run,
        }
        return commands[args.command](args)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except SearchError as e:  # ConfigError, ArtifactError, StorageError... not caught closer to the source
        print(f"error: {e.message}", file=sys.stderr)
        return 2 if e.code == "config_error" else 1
    except OSError as e:  # e.g. a local DEST or work dir that cannot be written
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"error:{where}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted: nothing was published; embeddings computed so far are checkpointed, "
            "re-run the same command to resume",
            file=sys.stderr,
        )
        return 130
