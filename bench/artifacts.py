"""Cached artifacts the measures share: the benchmark model's random-init checkpoint, bundles exported with
the project's exporter (keyed by their inputs and the exporter's code), the demo model and its images."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.context import QUICK_MODEL_CONFIG, QUICK_MODEL_NAME, REPO, Context


def code_hash(*paths: str) -> str:
    """Hash of source files (relative to the repo) whose change must invalidate a cached artifact."""
    h = hashlib.sha256()
    for rel in paths:
        for p in sorted((REPO / rel).rglob("*.py")) if (REPO / rel).is_dir() else [REPO / rel]:
            if p.is_file():
                h.update(str(p.relative_to(REPO)).encode())
                h.update(p.read_bytes())
    for dist in ("torch", "open_clip_torch", "onnx", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            h.update(f"{dist}={metadata.version(dist)}".encode())
    return h.hexdigest()[:12]


def register_quick_model(cache: Path) -> str:
    import open_clip

    cfg = cache / f"{QUICK_MODEL_NAME}.json"
    if not cfg.is_file() or json.loads(cfg.read_text()) != QUICK_MODEL_CONFIG:
        cfg.write_text(json.dumps(QUICK_MODEL_CONFIG))
    if open_clip.get_model_config(QUICK_MODEL_NAME) != QUICK_MODEL_CONFIG:
        open_clip.add_model_config(cfg)
    return QUICK_MODEL_NAME


def model_config_file(ctx: Context) -> Path | None:
    """The custom config file to pass to `python -m export --model-config` (quick mode), else None."""
    if ctx.model_name == QUICK_MODEL_NAME:
        register_quick_model(ctx.cache)
        return ctx.cache / f"{QUICK_MODEL_NAME}.json"
    return None


def random_checkpoint(ctx: Context, name: str | None = None, seed: int = 0) -> Path:
    """A random-init checkpoint of the benchmark architecture (seeded; cached)."""
    name = name or ctx.model_name
    path = ctx.cache / f"{name}-random-seed{seed}.pt"
    if not path.is_file():
        import open_clip
        import torch

        if name == QUICK_MODEL_NAME:
            register_quick_model(ctx.cache)
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    return path


def export_bundle(
    ctx: Context,
    *,
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    model: str | None = None,
    config: Path | None = None,
    checkpoint: Path | None = None,
    tag: str | None = None,
    extra_args: Sequence[str] = (),
) -> Path:
    """Export a bundle with the project's exporter (`python -m export`), cached by inputs and exporter code.
    ``extra_args`` go to the exporter as they are (e.g. ``--fixed-length-text``).

    Default: the benchmark architecture (ViT-B-32, or the tiny model with --quick), random init (seed 0).
    """
    model = model or ctx.model_name
    if config is None and model == ctx.model_name:
        config = model_config_file(ctx)
    if checkpoint is None:
        checkpoint = random_checkpoint(ctx, model)
    # Always all three precisions: one cached bundle serves every measure (the variants are small to make).
    precisions = ["fp32", "fp16", "int8"]
    key = hashlib.sha256(
        json.dumps(
            [
                model,
                str(config),
                _file_key(checkpoint),
                precisions,
                *extra_args,
                code_hash("export", "handler/core/bundle.py", "handler/core/encoders.py"),
            ]
        ).encode()
    ).hexdigest()[:12]
    out = ctx.cache / "bundles" / f"{tag or model}-{key}"
    if (out / "manifest.json").is_file():
        return out
    cmd = [
        sys.executable,
        "-m",
        "export",
        "--model",
        model,
        "--pretrained",
        str(checkpoint),
        "--out",
        str(out),
        "--precision",
        *precisions,
        "--force",
        "--quiet",
        *extra_args,
    ]
    if config is not None:
        cmd[3:5] = ["--model-config", str(config)]
    ctx.log(f"  exporting {tag or model} bundle ({' '.join(precisions)}) ...")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"export failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    ctx.log(f"  exported in {time.perf_counter() - t0:.0f}s")
    return out


def _file_key(path: Path) -> str:
    st = Path(path).stat()
    return f"{Path(path).name}:{st.st_size}:{int(st.st_mtime)}"


def demo_checkpoint() -> Path | None:
    """The committed demo model checkpoint, if present."""
    import demo

    return demo.CHECKPOINT_PATH if demo.CHECKPOINT_PATH.is_file() else None


class DemoUnavailable(RuntimeError):
    """The demo model could not be exported (its rows are skipped, with this message in the report)."""


def demo_bundle(ctx: Context, precisions: Sequence[str] = ("fp32", "fp16", "int8")) -> tuple[Path, bool]:
    """The demo model's bundle and whether it holds the trained weights (False: random init stand-in,
    because demo/model/demo-clip.pt is not there). Raises DemoUnavailable when the export fails."""
    import demo

    ckpt = demo_checkpoint()
    trained = ckpt is not None
    if ckpt is None:
        import open_clip
        import torch

        ckpt = ctx.cache / "demo-clip-random-seed0.pt"
        if not ckpt.is_file():
            open_clip.add_model_config(demo.CONFIG_PATH)
            torch.manual_seed(0)
            torch.save(open_clip.create_model(demo.MODEL_NAME, pretrained=None).state_dict(), ckpt)
    try:
        path = export_bundle(
            ctx,
            precisions=precisions,
            model=demo.MODEL_NAME,
            config=demo.CONFIG_PATH,
            checkpoint=ckpt,
            tag="demo-clip" if trained else "demo-clip-random",
        )
    except RuntimeError as exc:
        last = [ln for ln in str(exc).splitlines() if ln.strip()][-1:] or ["?"]
        raise DemoUnavailable(
            f"exporting the demo model ({demo.CONFIG_PATH.name}, "
            f"{'trained checkpoint' if trained else 'random init'}) failed: {last[0]}"
        ) from exc
    return path, trained


def demo_images(ctx: Context, n: int, seed: int = 7, size: int = 128) -> list[Path]:
    """``n`` demo images (JPEG, ``size`` px) written by demo.shapes, cached."""
    from demo.shapes import write_collection

    out = ctx.cache / f"demo-images-{n}-seed{seed}-{size}"
    done = out / ".complete"
    if not done.is_file():
        if out.exists():
            shutil.rmtree(out)
        ctx.log(f"  rendering {n} demo images ...")
        write_collection(out, n, seed, size=size)
        done.write_text("ok\n")
    return sorted(p for p in out.rglob("*.jpg"))


def image_labels(paths: Sequence[Path]) -> list[dict[str, Any]]:
    return [json.loads(p.with_suffix(".json").read_text()) for p in paths]
