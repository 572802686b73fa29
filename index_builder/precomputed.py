"""``python -m index_builder import-embeddings``: publish precomputed embeddings as an index version.

Embeddings made elsewhere (a GPU box, clip-retrieval's inference, another pipeline) become a normal index
version: the files are read by :mod:`index_builder.embeddings_files` (L2-normalised on the way in), then
written, published (pointer moved last) and old versions pruned exactly as a build does, under the same
per-index lock. An import replaces the collection: the version holds exactly the imported vectors.

The model is never guessed: ``--model-fingerprint`` (the bundle manifest's ``model_fingerprint``) or
``--bundle`` (whose fingerprint is used, and whose ``embed_dim`` the vectors must have) is required, and an
index whose current version was built with another model is refused unless ``--full`` (replace it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from handler.core.cli_args import positive_int
from handler.core.errors import ConfigError, SearchError
from handler.core.images import LEGACY_OPTIONS
from handler.core.index_format import read_manifest, read_pointer, version_prefix
from handler.core.storage import Store, open_store
from index_builder.embeddings_files import read_collection
from index_builder.errors import BuildError, UsageError
from index_builder.options import _Log
from index_builder.previous import _prune
from index_builder.publish import publish
from index_builder.version_write import BUILDER, new_version_id, write_version

__all__ = ["ImportOptions", "ImportResult", "add_parser", "import_embeddings", "run_cli"]

BACKEND = "import"
_FINGERPRINT = re.compile(r"^sha256:[0-9a-f]{64}$")

EPILOG = """\
SRC is a .npy file of float vectors [rows, dim] (then --ids names a .jsonl or .parquet file with one row per
vector, in order, each with an 'id'; a 'uri'/'url'/'image_path'/'path' field becomes the item's uri, the
other fields its metadata), or a folder / s3:// prefix in the layout of clip-retrieval's inference
(img_emb/img_emb_<N>.npy + metadata/metadata_<N>.parquet, paired by N; the id is the 'id' column, else
'image_path'). Vectors are L2-normalised; a row with NaN, infinity or all zeros, a duplicate or missing id,
or a dim other than the bundle's refuses the whole import (nothing is published).
"""


@dataclass
class ImportOptions:
    source: str
    out: str
    ids: str | None = None
    model_fingerprint: str | None = None
    bundle: str | None = None
    id_field: str | None = None
    image_root: str | None = None  # the collection root the service resolves relative item uris against
    precision: str = "fp32"
    full: bool = False
    M: int = 16
    ef_construction: int = 200
    ef: int = 128
    keep_versions: int = 3
    threads: int | None = None
    quiet: bool = False


@dataclass
class ImportResult:
    version: str
    manifest: dict[str, Any]
    count: int
    seconds: float
    read_seconds: float
    previous_version: str | None
    pruned: list[str] = field(default_factory=list)


def _model(opts: ImportOptions) -> tuple[str, int | None]:
    """(fingerprint, the bundle's embed_dim or None) from --model-fingerprint / --bundle."""
    dim: int | None = None
    fingerprint = opts.model_fingerprint
    if opts.bundle:
        from index_builder.backends import read_bundle_manifest

        manifest = read_bundle_manifest(opts.bundle)
        dim = int(manifest["embed_dim"])
        if fingerprint and fingerprint != manifest["model_fingerprint"]:
            raise UsageError(
                f"--model-fingerprint {fingerprint} is not the model of --bundle {opts.bundle} "
                f"({manifest['model_fingerprint']}); pass one of them"
            )
        fingerprint = manifest["model_fingerprint"]
    if not fingerprint:
        raise UsageError(
            "--model-fingerprint or --bundle is required: the model the vectors were made with (the bundle "
            "manifest's model_fingerprint); the service refuses an index of another model"
        )
    if not _FINGERPRINT.match(fingerprint):
        raise UsageError(
            f"--model-fingerprint {fingerprint!r}: expected sha256:<64 hex digits>, the model_fingerprint "
            "of the bundle's manifest.json (or pass --bundle)"
        )
    return fingerprint, dim


def _current(dest: Store, fingerprint: str, opts: ImportOptions, log: _Log) -> str | None:
    """DEST's current version; refuses another model's index unless --full."""
    try:
        pointer = read_pointer(dest)
        if pointer is None:
            return None
        manifest = read_manifest(dest, pointer["version"], pointer["manifest_sha256"])
    except SearchError as e:
        if not opts.full:
            raise BuildError(
                f"--out {dest.uri}: the current index cannot be read ({e.message}); pass --full to replace it"
            ) from None
        log.warn(f"ignoring the unreadable current index of {dest.uri} ({e.message})")
        return None
    if manifest["model_fingerprint"] != fingerprint and not opts.full:
        raise BuildError(
            f"--out {dest.uri} holds version {pointer['version']} of model {manifest['model_fingerprint']}, "
            f"but these embeddings are of model {fingerprint}: vectors of different models cannot be "
            "mixed. Pass --full to replace the index with this model's vectors, or import into another --out."
        )
    return str(pointer["version"])


def import_embeddings(opts: ImportOptions, *, store: Store | None = None) -> ImportResult:
    """Read, write and publish one imported version (see the module docstring). Raises :class:`BuildError`."""
    for name, value, low in (
        ("M", opts.M, 2),
        ("ef_construction", opts.ef_construction, 1),
        ("ef", opts.ef, 1),
        ("keep_versions", opts.keep_versions, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            flag = "--M" if name == "M" else "--" + name.replace("_", "-")
            raise UsageError(f"{flag} {value!r}: must be an integer >= {low}")
    if opts.precision not in ("fp32", "fp16", "int8"):
        raise UsageError(f"--precision {opts.precision!r}: use fp32, fp16 or int8")
    log = _Log(opts.quiet)
    t_start = time.perf_counter()
    fingerprint, dim = _model(opts)
    try:
        dest = store or open_store(opts.out)
    except ConfigError as e:
        raise UsageError(f"--out: {e.message}") from None
    from index_builder.build import _index_lock

    try:
        pointer = read_pointer(dest)
    except SearchError:
        pointer = None  # reported by _current
    with _index_lock(dest, pointer["version"] if pointer else None, log):
        current = _current(dest, fingerprint, opts, log)  # before reading: refuse another model's index early
        coll = read_collection(opts.source, opts.ids, id_field=opts.id_field, expect_dim=dim, warn=log.warn)
        read_seconds = time.perf_counter() - t_start
        count = len(coll.rows)
        log.info(
            f"read {count} vector(s) of dim {coll.vectors.shape[1]} ({coll.dtype}) from {coll.files} file(s) "
            f"of {opts.source} in {read_seconds:.1f}s"
        )
        if count == 0:
            raise BuildError(f"--source {opts.source} holds no vectors; nothing was published")
        version = new_version_id()
        fields: dict[str, Any] = {
            "model_fingerprint": fingerprint,
            "precision": opts.precision,
            "source": opts.image_root,
            "stats": {"imported": count, "count": count, "errors": 0},
            "builder": BUILDER,
            "backend": BACKEND,
            "previous_version": current,
            "image_preprocess": LEGACY_OPTIONS.to_manifest(),
            "imported": {
                "kind": "embeddings",
                "layout": coll.layout,
                "uri": opts.source,
                "ids": opts.ids,
                "files": coll.files,
                "dtype": coll.dtype,
                "normalised": True,
            },
            "build": {"read_seconds": round(read_seconds, 3), "full": opts.full},
        }
        log.info(f"writing version {version} ({count} items) to {dest.uri}")
        try:
            manifest = write_version(
                dest,
                version,
                vectors=coll.vectors,
                items=coll.rows,
                manifest_fields=fields,
                M=opts.M,
                ef_construction=opts.ef_construction,
                ef=opts.ef,
                threads=opts.threads,
            )
            del coll
            publish(dest, version, manifest)
        except (SearchError, OSError, ValueError) as e:
            with contextlib.suppress(Exception):
                dest.delete_prefix(version_prefix(version))
            msg = getattr(e, "message", None) or str(e)
            raise BuildError(
                f"publishing version {version} to {dest.uri} failed: {msg}\nThe pointer was not moved: "
                f"{dest.uri} still serves {f'version {current}' if current else 'no version'}."
            ) from None
        pruned = _prune(dest, opts.keep_versions, version, log)
    return ImportResult(
        version=version,
        manifest=manifest,
        count=count,
        seconds=time.perf_counter() - t_start,
        read_seconds=read_seconds,
        previous_version=current,
        pruned=pruned,
    )


def add_parser(sub: Any) -> None:
    """The ``import-embeddings`` sub-command of :func:`index_builder.cli.build_parser`."""
    p = sub.add_parser(
        "import-embeddings",
        help="publish precomputed embeddings (.npy + ids, or clip-retrieval output) as an index version",
        description="Publish the embeddings of SRC, made with the model named by --model-fingerprint or "
        "--bundle, as a new index version at DEST.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--source", required=True, metavar="SRC", help=".npy file, or a clip-retrieval folder/prefix"
    )
    p.add_argument("--out", required=True, metavar="DEST", help="index directory or s3://bucket/prefix")
    p.add_argument(
        "--ids", metavar="FILE", help="ids/metadata of a .npy SRC: .jsonl or .parquet, one row per vector"
    )
    p.add_argument("--model-fingerprint", metavar="sha256:...", help="the model_fingerprint of the bundle")
    p.add_argument(
        "--bundle", metavar="BUNDLE", help="take the fingerprint (and check the dim) from this bundle"
    )
    p.add_argument("--id-field", metavar="NAME", help="the field holding each vector's id (default id)")
    p.add_argument(
        "--image-root",
        metavar="ROOT",
        help="where the images are (folder or s3:// prefix), recorded as the index's source: the service "
        "resolves relative item uris against it",
    )
    p.add_argument(
        "--precision", default="fp32", choices=("fp32", "fp16", "int8"), help="recorded (default fp32)"
    )
    p.add_argument("--full", action="store_true", help="replace an index built with another model")
    p.add_argument("--M", type=positive_int, default=16, help="HNSW M (default 16)")
    p.add_argument(
        "--ef-construction", type=positive_int, default=200, help="HNSW ef_construction (default 200)"
    )
    p.add_argument(
        "--ef", type=positive_int, default=128, help="default query ef stored in the manifest (128)"
    )
    p.add_argument("--keep-versions", type=positive_int, default=3, help="versions to keep (default 3)")
    p.add_argument("--threads", type=positive_int, default=None, help="hnswlib build threads (default: all)")
    p.add_argument("--quiet", action="store_true", help="the result line and errors only")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")


def run_cli(args: argparse.Namespace) -> int:
    opts = ImportOptions(
        source=args.source,
        out=args.out,
        ids=args.ids,
        model_fingerprint=args.model_fingerprint,
        bundle=args.bundle,
        id_field=args.id_field,
        image_root=args.image_root,
        precision=args.precision,
        full=args.full,
        M=args.M,
        ef_construction=args.ef_construction,
        ef=args.ef,
        keep_versions=args.keep_versions,
        threads=args.threads,
        quiet=args.quiet or args.json,
    )
    r = import_embeddings(opts)
    if args.json:
        keys = ("version", "count", "previous_version", "pruned")
        extra = {"out": args.out, "seconds": round(r.seconds, 3), "read_seconds": round(r.read_seconds, 3)}
        print(json.dumps({k: getattr(r, k) for k in keys} | extra))
        return 0
    print(
        f"published version {r.version} to {args.out}: {r.count} items imported from {args.source} "
        f"in {r.seconds:.1f}s (read {r.read_seconds:.1f}s)"
    )
    return 0
