"""The encode benchmark's sections after the timing rounds: session creation of pre-optimized model files,
parity of the alternatives against torch, onnxruntime's operator profile, and the steps around the encoder
(tokenizing, preprocessing)."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Context, Timing, ms, time_fn
from bench.encode.engines import Row
from bench.encode.measuring import QUERY, Plan, op_profile, session
from bench.encode.setup import Setup

PARITY_MAX_ABS = 1e-5


def session_creation_rows(ctx: Context, s: Setup) -> list[list[str]]:
    """The bundle's model vs a model pre-optimized offline and saved (cold-start cost)."""
    threads, bundle = s.threads, s.bundle
    preopt = ctx.scratch("encode-preoptimized")
    btp, bvp = bundle / "textual.onnx", bundle / "visual.onnx"  # session creation: the shipped files
    for tower, p in (("textual", btp), ("visual", bvp)):
        session(p, threads, "extended", optimized_out=preopt / f"{tower}.extended.onnx")
        session(p, threads, "all", optimized_out=preopt / f"{tower}.all.onnx")
    load_rows = []
    for label, paths, level in (
        ("bundle model, runtime level ALL (as shipped)", {"textual": btp, "visual": bvp}, "all"),
        (
            "pre-optimized at EXTENDED and saved, loaded with ALL",
            {t: preopt / f"{t}.extended.onnx" for t in ("textual", "visual")},
            "all",
        ),
        (
            "pre-optimized at ALL and saved, loaded with optimizations off",
            {t: preopt / f"{t}.all.onnx" for t in ("textual", "visual")},
            "disabled",
        ),
    ):
        times = {}
        for tower, p in paths.items():
            ts = []
            for _ in range(1 if ctx.quick else 3):
                t0 = time.perf_counter()
                session(p, threads, level)
                ts.append(time.perf_counter() - t0)
                gc.collect()
            times[tower] = Timing(ts).median
        load_rows.append([label, ms(times["textual"]), ms(times["visual"])])
    return load_rows


@dataclass
class Parity:
    rows: list[list[Any]]  # the parity table's rows
    n_texts: int  # the exporter's parity texts
    n_images: int


def parity(s: Setup, rows: list[Row]) -> Parity:
    """Parity of the alternatives vs torch (the exporter's parity inputs), int8 cosine vs torch; each row's
    numbers also go to ``row.parity``."""
    import torch

    from export import parity as export_parity

    model, tokenizer, preprocess = s.model, s.tokenizer, s.preprocess
    p_ids = tokenizer(export_parity.PARITY_TEXTS)
    p_pix = torch.stack([preprocess(im) for im in export_parity.parity_images()])
    with torch.inference_mode():
        ref_t = model.encode_text(p_ids, normalize=True).numpy()
        ref_v = model.encode_image(p_pix, normalize=True).numpy()
    p_ids_np, p_pix_np = p_ids.numpy().astype(np.int64), p_pix.numpy()

    parity_rows = []
    for r in rows:
        if r.key not in ("ort-optimizer", "int8-per-tensor", "onnx-fp32", "onnx-fp32-fixed", "onnx-int8"):
            continue
        text_fn, image_fn, _ = r.factory()  # the trimming rows trim inside text_fn
        out_t = (
            np.concatenate([text_fn(p_ids_np[i : i + 1]) for i in range(len(p_ids_np))]) if text_fn else None
        )
        out_v = image_fn(p_pix_np) if image_fn else None
        if "int8" in r.key:
            cos = [
                float(np.min(np.sum(_n(a) * _n(b), axis=1)))
                for a, b in ((out_t, ref_t), (out_v, ref_v))
                if a is not None
            ]
            r.parity = {"cosine_min_vs_torch": min(cos)}
            parity_rows.append([r.label, None, None, min(cos), "int8: cosine, not max-abs"])
        else:
            dt = float(np.abs(out_t - ref_t).max()) if out_t is not None else None
            dv = float(np.abs(out_v - ref_v).max()) if out_v is not None else None
            r.parity = {"text_max_abs": dt, "image_max_abs": dv}
            ok = all(x is None or x <= PARITY_MAX_ABS for x in (dt, dv))
            parity_rows.append([r.label, dt, dv, None, "≤ 1e-5: yes" if ok else "**no — exceeds 1e-5**"])
        if r.trim and "int8" not in r.key and text_fn is not None:
            # several queries of different lengths in one call, trimmed to the longest
            r.parity["text_batched_max_abs"] = float(np.abs(text_fn(p_ids_np) - ref_t).max())
        del text_fn, image_fn
        gc.collect()
    return Parity(parity_rows, len(p_ids_np), len(p_pix_np))


def profiles(ctx: Context, s: Setup) -> dict[str, dict[str, float]]:
    """Where the fp32 time goes: onnxruntime's own profiler, per operator type."""
    threads, ids, pixb = s.threads, s.ids, s.pixb
    tp, vp = s.fixed / "textual.onnx", s.fixed / "visual.onnx"
    return {
        "text b1 (77 tokens)": op_profile(tp, threads, ids, 3 if ctx.quick else 5, ctx),
        f"image b{len(pixb)}": op_profile(vp, threads, pixb, 2 if ctx.quick else 3, ctx),
        f"int8 image b{len(pixb)}": op_profile(
            s.bundle / "visual.int8.onnx", threads, pixb, 2 if ctx.quick else 3, ctx
        ),
    }


def preprocess_timing(bundle: Path, oc_preprocess: Any, plan: Plan, ctx: Context) -> dict[str, float]:
    """Preprocessing (per image), runtime vs open_clip, on a 640x480 JPEG."""
    import io

    from PIL import Image

    from handler.core.runtime import load_bundle

    rng = np.random.default_rng(1)
    arr = (rng.random((480, 640, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    emb = load_bundle(bundle, threads=ctx.threads)
    n = 5 if plan.quick else 30
    rt = time_fn(lambda: emb.preprocess(data), runs=n, warmup=2)
    oc = time_fn(lambda: oc_preprocess(Image.open(io.BytesIO(data)).convert("RGB")), runs=n, warmup=2)
    return {"runtime": rt.median, "open_clip": oc.median}


def tokenize_timing(s: Setup) -> dict[str, float]:
    """Tokenizing one query, runtime vs open_clip."""
    from handler.core.runtime import load_bundle

    runtime_tokenize = load_bundle(s.bundle, threads=s.threads).tokenize
    tok_rt = time_fn(lambda: runtime_tokenize([QUERY]), runs=50, warmup=3)
    tok_oc = time_fn(lambda: s.tokenizer([QUERY]), runs=50, warmup=3)
    return {"runtime": tok_rt.median, "open_clip": tok_oc.median}


def _n(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)
