"""``python -m index_builder {build,import-embeddings,info,verify,duplicates}``: the offline index job.

Exit codes: 0 success; 1 the build, info or verify failed (message on stderr, naming what and what to
do; ``--strict`` with unindexable files; verify found a mismatch); 2 bad command-line values;
130 interrupted (re-run to resume). Only heavy imports (torch) on the ``--backend torch`` path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence

from index_builder.recall import DEFAULT_TARGET_RECALL
from index_builder.shard_plan import DEFAULT_SHARD_SIZE

__all__ = ["build_parser", "main"]

EPILOG_BUILD = """\
SRC is a folder (recursive; jpg jpeg png webp gif bmp tif tiff avif ico; a sidecar NAME.json beside NAME.jpg
becomes the item's metadata; other files and hidden ones are counted as skipped, by extension), an
s3://bucket/prefix, or a JSONL manifest of {"id", "uri", ...metadata} lines.
BUNDLE and DEST are local paths or s3:// URIs. When DEST already has an index, the build is incremental:
unchanged files are not read again, changed and new files are embedded, deleted ones dropped; when nothing
changed, no new version is published (exit 0). Embeddings are checkpointed in --work-dir, so a killed build
resumes where it stopped.
"""


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be >= 1")
    return n


def _recall(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.0 < number <= 1.0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number in (0, 1]")
    return number


def _background(value: str) -> tuple[int, int, int] | None:
    from handler.core.images import parse_background

    try:
        return parse_background(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    from handler.core.images import DEFAULT_MAX_PIXELS, WHITE
    from index_builder import duplicates
    from index_builder.build import default_workers

    p = argparse.ArgumentParser(
        prog="python -m index_builder", description="Build, inspect and verify CLIP image search indexes."
    )
    sub = p.add_subparsers(
        dest="command", required=True, metavar="{build,import-embeddings,info,verify,duplicates}"
    )

    b = sub.add_parser(
        "build",
        help="embed a collection and publish a new index version",
        description="Embed the images of SRC with BUNDLE and publish a new index version at DEST.",
        epilog=EPILOG_BUILD,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument(
        "--source", required=True, metavar="SRC", help="folder, s3://bucket/prefix or manifest.jsonl"
    )
    b.add_argument(
        "--bundle",
        default=os.environ.get("BUNDLE_URI"),
        metavar="BUNDLE",
        help="model bundle directory or s3:// prefix (env BUNDLE_URI)",
    )
    b.add_argument("--out", required=True, metavar="DEST", help="index directory or s3://bucket/prefix")
    b.add_argument(
        "--full",
        action="store_true",
        help="re-embed everything, ignoring DEST's current version (required to switch models)",
    )
    b.add_argument("--batch-size", type=_positive, default=32, help="images per encoder call (default 32)")
    b.add_argument(
        "--workers",
        type=_positive,
        default=default_workers(),
        help=f"decode/preprocess threads (default {default_workers()})",
    )
    b.add_argument(
        "--threads", type=_positive, default=None, help="onnxruntime intra-op threads (default: all cores)"
    )
    b.add_argument(
        "--precision",
        default=None,
        help="bundle precision variant: fp32, fp16 or int8 (default: env PRECISION, the variable the "
        "search service reads, so the index is embedded like its queries; else fp32)",
    )
    b.add_argument(
        "--backend",
        choices=("onnx", "torch"),
        default="onnx",
        help="onnx (the bundle, default) or torch (open_clip, e.g. for a GPU rebuild)",
    )
    b.add_argument("--device", default="cpu", help="torch backend device: cpu or cuda (default cpu)")
    b.add_argument(
        "--pretrained",
        metavar="PATH",
        help="torch backend: the checkpoint the bundle was exported from (sha256 checked)",
    )
    b.add_argument("--M", type=_positive, default=16, help="HNSW M (default 16)")
    b.add_argument(
        "--ef-construction", type=_positive, default=200, help="HNSW ef_construction (default 200)"
    )
    b.add_argument(
        "--ef",
        type=_positive,
        default=None,
        help="default query ef stored in the manifest (default: per shard, the smallest ef that reaches "
        "--target-recall, measured at build; the recall at a given ef is measured too)",
    )
    b.add_argument(
        "--target-recall",
        type=_recall,
        default=DEFAULT_TARGET_RECALL,
        help=f"recall@10 against exact search the measured ef must reach (default {DEFAULT_TARGET_RECALL})",
    )
    b.add_argument(
        "--index-shard-size",
        type=_positive,
        default=DEFAULT_SHARD_SIZE,
        help=f"vectors per HNSW shard at most (default {DEFAULT_SHARD_SIZE}: smaller indexes are one shard)",
    )
    b.add_argument(
        "--keep-versions", type=_positive, default=3, help="versions to keep after pruning (default 3)"
    )
    b.add_argument(
        "--strict", action="store_true", help="fail (exit 1, publish nothing) if any file cannot be indexed"
    )
    b.add_argument(
        "--work-dir",
        metavar="DIR",
        help="checkpoint directory (default DEST/.work, or a cache dir keyed by DEST for S3)",
    )
    b.add_argument(
        "--max-pixels",
        type=_positive,
        default=None,
        help=f"skip images larger than this many pixels (default {DEFAULT_MAX_PIXELS}, the service's "
        "MAX_IMAGE_PIXELS default: raise both together)",
    )
    b.add_argument(
        "--background",
        type=_background,
        default=WHITE,
        metavar="COLOUR",
        help="composite transparent images over this colour: white (default), black, #rrggbb, r,g,b, "
        "or none (drop alpha, the behaviour of indexes built before this option); recorded in "
        "the index, the service prepares queries and thumbnails the same way",
    )
    b.add_argument(
        "--max-file-bytes",
        type=_positive,
        default=None,
        help="skip files larger than this many bytes without reading them (default 268435456)",
    )
    b.add_argument(
        "--shard-size",
        type=_positive,
        default=1024,
        help="checkpoint every N embedded images (default 1024; also every 60 s)",
    )
    duplicates.add_build_options(b)
    b.add_argument("--allow-empty", action="store_true", help="publish even if no image could be indexed")
    b.add_argument(
        "--quiet", action="store_true", help="no progress bar or notes; errors and the result line only"
    )
    b.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    b.add_argument(
        "--parallel",
        type=_positive,
        default=None,
        metavar="N",
        help="plan -> N embed worker processes -> publish: the Step Functions job on this machine "
        "(work area and lock in DEST/.rebuild/; rerun the same command after a crash)",
    )

    from index_builder.precomputed import add_parser as add_import_parser

    add_import_parser(sub)
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
    duplicates.add_parser(sub, _positive)
    return p


def default_precision(environ: Mapping[str, str] | None = None) -> str:
    """The service's ``PRECISION`` (its env variable) when set, else fp32: an index built for an int8 service
    is embedded with the int8 towers that will encode its queries (and int8 rebuilds are ~3x faster)."""
    from handler.core.bundle import PRECISIONS
    from index_builder.sources import UsageError

    raw = (os.environ if environ is None else environ).get("PRECISION", "").strip()
    if raw and raw.lower() not in PRECISIONS:
        raise UsageError(f"PRECISION={raw!r}: must be one of {', '.join(PRECISIONS)} (or pass --precision)")
    return raw.lower() or "fp32"


def _cmd_build(args: argparse.Namespace) -> int:
    from handler.core.images import DEFAULT_MAX_PIXELS
    from index_builder.build import DEFAULT_MAX_FILE_BYTES, BuildOptions, build, format_skipped
    from index_builder.sources import UsageError

    if not args.bundle:
        raise UsageError(
            "--bundle is required (or set BUNDLE_URI): the model bundle directory or s3:// prefix"
        )
    precision = args.precision or default_precision()
    opts = BuildOptions(
        source=args.source,
        bundle=args.bundle,
        out=args.out,
        full=args.full,
        batch_size=args.batch_size,
        workers=args.workers,
        precision=precision,
        backend=args.backend,
        device=args.device,
        pretrained=args.pretrained,
        M=args.M,
        ef_construction=args.ef_construction,
        ef=args.ef,
        target_recall=args.target_recall,
        index_shard_size=args.index_shard_size,
        keep_versions=args.keep_versions,
        strict=args.strict,
        work_dir=args.work_dir,
        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
        max_file_bytes=args.max_file_bytes or DEFAULT_MAX_FILE_BYTES,
        quiet=args.quiet,
        shard_size=args.shard_size,
        threads=args.threads,
        allow_empty=args.allow_empty,
        background=args.background,
        duplicate_threshold=args.duplicate_threshold if args.duplicates else None,
    )
    if args.parallel:
        return _print_parallel(args, opts)
    result = build(opts)
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
        return 0
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
    return 0


def _print_parallel(args: argparse.Namespace, opts: object) -> int:
    from index_builder.build import format_skipped
    from index_builder.parallel import build_parallel

    r = build_parallel(opts, args.parallel)  # type: ignore[arg-type]
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
        return 0
    skipped = f"; skipped {format_skipped(r['skipped'])} (not images)" if r.get("skipped") else ""
    if not r["published"]:
        print(f"nothing to do: {args.out} is up to date (version {r['version']}){skipped}")
        return 0
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
    return 0


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
    from index_builder.sources import BuildError

    try:
        from index_builder import duplicates
        from index_builder.precomputed import run_cli as _cmd_import

        commands = {
            "build": _cmd_build,
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
