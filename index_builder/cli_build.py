"""``python -m index_builder build``: its options, and the command that turns them into a build.

The result is printed by :mod:`index_builder.cli_report`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from handler.core.cli_args import positive_int, unit_interval
from index_builder.cli_report import print_parallel, print_result
from index_builder.errors import UsageError
from index_builder.recall import DEFAULT_TARGET_RECALL
from index_builder.shard_plan import DEFAULT_SHARD_SIZE

__all__ = ["add_parser", "default_precision", "run"]

EPILOG_BUILD = """\
SRC is a folder (recursive; jpg jpeg png webp gif bmp tif tiff avif ico; a sidecar NAME.json beside NAME.jpg
becomes the item's metadata; other files and hidden ones are counted as skipped, by extension), an
s3://bucket/prefix, or a JSONL manifest of {"id", "uri", ...metadata} lines.
BUNDLE and DEST are local paths or s3:// URIs. When DEST already has an index, the build is incremental:
unchanged files are not read again, changed and new files are embedded, deleted ones dropped; when nothing
changed, no new version is published (exit 0). Embeddings are checkpointed in --work-dir, so a killed build
resumes where it stopped.
"""


def _background(value: str) -> tuple[int, int, int] | None:
    from handler.core.images import parse_background

    try:
        return parse_background(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parser(sub: Any) -> None:
    """The ``build`` sub-command of :func:`index_builder.cli.build_parser`."""
    from handler.core.images import DEFAULT_MAX_PIXELS, WHITE
    from index_builder import duplicates
    from index_builder.options import default_workers

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
    b.add_argument("--batch-size", type=positive_int, default=32, help="images per encoder call (default 32)")
    b.add_argument(
        "--workers",
        type=positive_int,
        default=default_workers(),
        help=f"decode/preprocess threads (default {default_workers()})",
    )
    b.add_argument(
        "--threads", type=positive_int, default=None, help="onnxruntime intra-op threads (default: all cores)"
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
    b.add_argument("--M", type=positive_int, default=16, help="HNSW M (default 16)")
    b.add_argument(
        "--ef-construction", type=positive_int, default=200, help="HNSW ef_construction (default 200)"
    )
    b.add_argument(
        "--ef",
        type=positive_int,
        default=None,
        help="default query ef stored in the manifest (default: per shard, the smallest ef that reaches "
        "--target-recall, measured at build; the recall at a given ef is measured too)",
    )
    b.add_argument(
        "--target-recall",
        type=unit_interval("the recall target"),
        default=DEFAULT_TARGET_RECALL,
        help=f"recall@10 against exact search the measured ef must reach (default {DEFAULT_TARGET_RECALL})",
    )
    b.add_argument(
        "--index-shard-size",
        type=positive_int,
        default=DEFAULT_SHARD_SIZE,
        help=f"vectors per HNSW shard at most (default {DEFAULT_SHARD_SIZE}: smaller indexes are one shard)",
    )
    b.add_argument(
        "--keep-versions", type=positive_int, default=3, help="versions to keep after pruning (default 3)"
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
        type=positive_int,
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
        type=positive_int,
        default=None,
        help="skip files larger than this many bytes without reading them (default 268435456)",
    )
    b.add_argument(
        "--shard-size",
        type=positive_int,
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
        type=positive_int,
        default=None,
        metavar="N",
        help="plan -> N embed worker processes -> publish: the Step Functions job on this machine "
        "(work area and lock in DEST/.rebuild/; rerun the same command after a crash)",
    )


def default_precision(environ: Mapping[str, str] | None = None) -> str:
    """The service's ``PRECISION`` (its env variable) when set, else fp32: an index built for an int8 service
    is embedded with the int8 towers that will encode its queries (and int8 rebuilds are ~3x faster)."""
    from handler.core.bundle import PRECISIONS

    raw = (os.environ if environ is None else environ).get("PRECISION", "").strip()
    if raw and raw.lower() not in PRECISIONS:
        raise UsageError(f"PRECISION={raw!r}: must be one of {', '.join(PRECISIONS)} (or pass --precision)")
    return raw.lower() or "fp32"


def run(args: argparse.Namespace) -> int:
    """Build (serially, or with ``--parallel N`` worker processes) and print the result."""
    from handler.core.images import DEFAULT_MAX_PIXELS
    from index_builder.build import build
    from index_builder.options import DEFAULT_MAX_FILE_BYTES, BuildOptions

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
        from index_builder.parallel import build_parallel

        print_parallel(args, build_parallel(opts, args.parallel))
    else:
        print_result(args, build(opts))
    return 0
