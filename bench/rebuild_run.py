"""Index build throughput: the builder end to end vs pure encode vs the original one-image-at-a-time loop.

    python -m bench.rebuild_run [--n 1000] [--bundle DIR] [--pretrained CKPT] [--size 128] [--json OUT]

On ``n`` demo images (JPEG, ``size`` px, from :func:`demo.shapes.write_collection`) it measures, in images/s:

* ``end_to_end``: :func:`index_builder.build.build` (``--full``) into a fresh local index: read + sha256 +
  decode + preprocess on ``workers`` threads overlapping ONNX inference (``pipeline``: the embedding phase;
  ``total``: including listing, HNSW construction and writing the version);
* ``pure_encode``: the builder's encoder on the same images decoded and preprocessed beforehand (the
  ceiling); ``pure_encode_runtime``: the same through the runtime's ``Embedder.embed_pixels`` (its
  onnxruntime session spin-waits between calls; the builder's does not, to leave the cores to decoding);
* ``decode_preprocess``: one thread decoding + preprocessing (what the workers do);
* ``torch_sqlite_loop``: the original design - open_clip torch model and its own transform, one image at a
  time, each embedding stored as a BLOB row in SQLite.

Without ``--bundle`` the demo model is exported to a temporary bundle first (needs torch). Returns / prints
a dict; ``--json`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from handler.core.cpus import usable_cpus

__all__ = ["main", "run"]


def _export_demo_bundle(out: Path, checkpoint: Path) -> Path:
    import demo
    from export.cli import main as export_main

    rc = export_main(
        [
            "--model-config",
            str(demo.CONFIG_PATH),
            "--pretrained",
            str(checkpoint),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    if rc != 0:
        raise RuntimeError(f"exporting the demo bundle failed (exit {rc})")
    return out


def _default_checkpoint(manifest: dict[str, Any]) -> Path | None:
    import demo

    ckpt = (manifest.get("model") or {}).get("checkpoint") or {}
    if ckpt.get("file") == demo.CHECKPOINT_PATH.name and demo.CHECKPOINT_PATH.is_file():
        return demo.CHECKPOINT_PATH
    return None


def _torch_sqlite_loop(manifest: dict[str, Any], checkpoint: Path, paths: list[Path], db: Path) -> float:
    """The original design: open_clip, one image at a time, embeddings into SQLite blobs. Returns seconds."""
    import open_clip
    import torch
    from PIL import Image

    name, config = manifest["model"]["name"], manifest["model"]["config"]
    if config and open_clip.get_model_config(name) != config:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / f"{name}.json"
            cfg.write_text(json.dumps(config))
            open_clip.add_model_config(cfg)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(checkpoint))
    model.eval()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE embeddings (id TEXT PRIMARY KEY, path TEXT, embedding BLOB)")
    t0 = time.perf_counter()
    with torch.no_grad():
        for path in paths:
            image = preprocess(Image.open(path)).unsqueeze(0)
            vec = model.encode_image(image)
            vec = vec / vec.norm(dim=-1, keepdim=True)
            conn.execute(
                "INSERT INTO embeddings VALUES (?, ?, ?)",
                (path.name, str(path), vec[0].numpy().astype(np.float32).tobytes()),
            )
    conn.commit()
    seconds = time.perf_counter() - t0
    conn.close()
    return seconds


def run(
    n: int = 1000,
    *,
    bundle: str | Path | None = None,
    pretrained: str | Path | None = None,
    size: int = 128,
    batch_size: int = 32,
    workers: int | None = None,
    precision: str = "fp32",
    torch_loop: bool = True,
    torch_loop_n: int | None = None,
    work_dir: str | Path | None = None,
    quiet: bool = False,
    repeat: int = 1,
    runtime_encode: bool = False,
) -> dict[str, Any]:
    """Run the benchmark; returns ``{"n", "model", "rates": {name: images/s}, "seconds": {...}, ...}``.
    The builder and the pure encode are run ``repeat`` times, interleaved, and the best run of each counts
    (use 3 on a busy machine); the torch loop runs once. ``runtime_encode`` adds ``pure_encode_runtime``."""
    import demo
    from demo.shapes import write_collection
    from handler.core.preprocess import ImagePreprocessor
    from handler.core.runtime import load_bundle
    from index_builder.backends import OnnxBackend, read_bundle_manifest
    from index_builder.build import build
    from index_builder.options import BuildOptions, default_workers

    workers = workers or default_workers()

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-build-", dir=work_dir) as tmp_name:
        tmp = Path(tmp_name)
        if bundle is None:
            ckpt = Path(pretrained) if pretrained else demo.CHECKPOINT_PATH
            say(f"exporting the demo model ({ckpt}) to a temporary bundle")
            bundle = _export_demo_bundle(tmp / "bundle", ckpt)
        bundle = str(bundle)
        manifest = read_bundle_manifest(bundle)
        say(f"writing {n} demo images ({size} px JPEG)")
        paths = write_collection(tmp / "images", n, seed=0, size=size, fmt="jpg")

        backend = OnnxBackend(bundle, precision=precision, batch_size=batch_size)
        pre = ImagePreprocessor(manifest["image"])
        say("decode + preprocess (one thread) ...")
        t0 = time.perf_counter()
        pixels = np.stack([pre(p.read_bytes()) for p in paths])
        decode_s = time.perf_counter() - t0
        backend.embed(pixels[:batch_size])  # warm-up
        runtime = None
        if runtime_encode:
            runtime = load_bundle(bundle, precision=precision, batch_size=batch_size, lazy_visual=False)
            runtime.embed_pixels(pixels[:batch_size])
        runtime_runs: list[float] = []
        build_cpu: list[float] = []
        encode_cpu: list[float] = []

        runs: list[Any] = []
        encode_runs: list[float] = []
        for i in range(max(1, repeat)):
            # end to end: the builder into a fresh index, so every image is read, decoded and embedded
            say(f"[{i + 1}/{repeat}] end to end (index_builder.build) ...")
            opts = BuildOptions(
                source=str(tmp / "images"),
                bundle=bundle,
                out=str(tmp / f"index-{i}"),
                full=True,
                batch_size=batch_size,
                workers=workers,
                precision=precision,
                quiet=True,
                work_dir=str(tmp / "work"),
            )
            c0 = time.process_time()
            runs.append(build(opts))
            build_cpu.append(time.process_time() - c0)
            assert runs[-1].stats["embedded"] == n, runs[-1].stats
            say(f"[{i + 1}/{repeat}] pure encode (embed_pixels on pre-decoded arrays) ...")
            t0, c0 = time.perf_counter(), time.process_time()
            for j in range(0, n, batch_size):
                backend.embed(pixels[j : j + batch_size])
            encode_runs.append(time.perf_counter() - t0)
            encode_cpu.append(time.process_time() - c0)
            if runtime is not None:
                say(f"[{i + 1}/{repeat}] pure encode with the runtime's Embedder.embed_pixels ...")
                t0 = time.perf_counter()
                for j in range(0, n, batch_size):
                    runtime.embed_pixels(pixels[j : j + batch_size])
                runtime_runs.append(time.perf_counter() - t0)
        result = min(runs, key=lambda r: r.embed_seconds)
        encode_s = min(encode_runs)

        seconds: dict[str, float] = {
            "end_to_end_pipeline": result.embed_seconds,
            "end_to_end_total": result.seconds,
            "pure_encode": encode_s,
            "decode_preprocess_1_thread": decode_s,
        }
        rates: dict[str, float] = {
            "end_to_end_pipeline": n / result.embed_seconds,
            "end_to_end_total": n / result.seconds,
            "pure_encode": n / encode_s,
            "decode_preprocess_1_thread": n / decode_s,
        }
        if runtime_runs:
            seconds["pure_encode_runtime"] = min(runtime_runs)
            rates["pure_encode_runtime"] = n / min(runtime_runs)
        loop_n = min(n, torch_loop_n or n)
        if torch_loop:
            ckpt = Path(pretrained) if pretrained else _default_checkpoint(manifest)
            if ckpt is None:
                say("skipping the torch + SQLite loop: pass --pretrained (the bundle's checkpoint)")
            else:
                say(
                    "original design: open_clip torch, one image at a time, "
                    f"SQLite blobs ({loop_n} images) ..."
                )
                loop_s = _torch_sqlite_loop(manifest, ckpt, paths[:loop_n], tmp / "embeddings.sqlite")
                seconds["torch_sqlite_loop"] = loop_s
                rates["torch_sqlite_loop"] = loop_n / loop_s

    report = {
        "n": n,
        "repeat": max(1, repeat),
        "image_size": size,
        "model": manifest["model"]["name"],
        "input_size": manifest["image"]["size"],
        "precision": precision,
        "batch_size": batch_size,
        "workers": workers,
        "cpus": usable_cpus(),
        "rates": {k: round(v, 1) for k, v in rates.items()},
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        # CPU seconds (all threads) per image: insensitive to other load on the machine
        "cpu_ms_per_image": {
            "end_to_end_total": round(1000 * min(build_cpu) / n, 2),
            "pure_encode": round(1000 * min(encode_cpu) / n, 2),
        },
        "torch_loop_n": loop_n if "torch_sqlite_loop" in rates else 0,
        "end_to_end_vs_pure_encode": round(rates["end_to_end_pipeline"] / rates["pure_encode"], 3),
    }
    if "torch_sqlite_loop" in rates:
        report["speedup_vs_torch_sqlite_loop"] = round(
            rates["end_to_end_pipeline"] / rates["torch_sqlite_loop"], 2
        )
    if not quiet:
        print(format_table(report))
    return report


def format_table(report: dict[str, Any]) -> str:
    labels = {
        "end_to_end_pipeline": "index_builder end to end (embedding phase)",
        "end_to_end_total": "index_builder end to end (incl. HNSW + write)",
        "pure_encode": "pure encode (builder's session, pre-decoded)",
        "pure_encode_runtime": "pure encode (Embedder.embed_pixels, pre-decoded)",
        "decode_preprocess_1_thread": "decode + preprocess, 1 thread",
        "torch_sqlite_loop": "original loop (torch, 1 image, SQLite)",
    }
    lines = [
        f"{report['n']} demo images ({report['image_size']} px JPEG) -> {report['model']} "
        f"{report['input_size']} {report['precision']}, batch {report['batch_size']}, "
        f"{report['workers']} workers, {report['cpus']} CPUs, best of {report['repeat']}",
        f"{'':48s} {'images/s':>10s} {'seconds':>9s}",
    ]
    for key, label in labels.items():
        if key in report["rates"]:
            lines.append(f"{label:48s} {report['rates'][key]:10.1f} {report['seconds'][key]:9.2f}")
    lines.append(f"end to end / pure encode: {report['end_to_end_vs_pure_encode']:.2f}")
    cpu = report["cpu_ms_per_image"]
    lines.append(
        f"CPU ms per image (all threads): end to end total {cpu['end_to_end_total']:.1f}, "
        f"pure encode {cpu['pure_encode']:.1f}"
    )
    if "speedup_vs_torch_sqlite_loop" in report:
        lines.append(f"end to end vs original loop: {report['speedup_vs_torch_sqlite_loop']:.1f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rebuild_run", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="number of demo images (default 1000)")
    p.add_argument("--bundle", help="model bundle (default: export the demo model to a temp dir)")
    p.add_argument(
        "--pretrained", help="the bundle's checkpoint, for the torch loop (default: the demo model's)"
    )
    p.add_argument("--size", type=int, default=128, help="image side in px (default 128)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--no-torch-loop", action="store_true", help="skip the original torch + SQLite loop")
    p.add_argument("--torch-loop-n", type=int, default=None, help="images for the torch loop (default --n)")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of the builder and of pure encode, best counts (default 1; 3 on a busy machine)",
    )
    p.add_argument(
        "--runtime-encode",
        action="store_true",
        help="also time pure encode through the runtime's Embedder.embed_pixels",
    )
    p.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    args = p.parse_args(argv)
    report = run(
        args.n,
        bundle=args.bundle,
        pretrained=args.pretrained,
        size=args.size,
        batch_size=args.batch_size,
        workers=args.workers,
        precision=args.precision,
        torch_loop=not args.no_torch_loop,
        torch_loop_n=args.torch_loop_n,
        repeat=args.repeat,
        runtime_encode=args.runtime_encode,
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
