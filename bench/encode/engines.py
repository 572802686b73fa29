"""The engines the encode benchmark times: one Row per engine (a factory making its text / image callables
fresh in every round, and the timings collected over the rounds), the factories for torch, the bundle
through the runtime and plain onnxruntime sessions, and the interleaved measuring rounds."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Context, Timing, ms, time_fn
from bench.encode.measuring import Plan, Sgemm, run_fn, session
from bench.encode.setup import Setup

Engine = tuple[Callable | None, Callable | None, dict[str, float]]  # text fn, image fn, load seconds


class Row:
    """One engine: a factory making its (text, image) callables, and the timings collected over rounds."""

    def __init__(
        self,
        key: str,
        label: str,
        factory: Callable[[], Engine],
        *,
        slow: bool = False,
        trim: bool = False,
        by_length: bool = False,
    ):
        self.key, self.label, self.factory, self.slow, self.trim = key, label, factory, slow, trim
        self.by_length = by_length  # also time text queries of each TEXT_LENGTHS length
        self.samples: dict[str, list[float]] = {}
        self.load_s: dict[str, float] = {}
        self.parity: dict[str, float] = {}
        self.batch = 16

    def median(self, what: str) -> float | None:
        xs = self.samples.get(what)
        if not xs:
            return None
        return Timing(xs).median / (self.batch if what == "img_batch" else 1)


def measure_round(
    row: Row,
    plan: Plan,
    ids: np.ndarray,
    pix1: np.ndarray,
    pixb: np.ndarray,
    rnd: int,
    by_length: dict[int, np.ndarray] | None = None,
) -> None:
    text, image, load = row.factory()
    if rnd == 0:
        row.load_s = load
    row.batch = len(pixb)

    def share(n: int) -> int:  # this round's part of n timed runs (fp16: at most 3 in all)
        return max(1, -(-min(n, 3 if row.slow else n) // plan.rounds))

    cap = plan.cap / plan.rounds
    warm = 1 if row.slow else plan.warmup
    cells = []
    if text is not None:
        cells.append(("text", lambda: text(ids), plan.text_runs, warm))
        for n, x in (by_length or {}).items() if row.by_length else ():
            cells.append((f"text{n}", lambda x=x: text(x), plan.text_runs, warm))
    if image is not None:
        cells.append(("img1", lambda: image(pix1), plan.img1_runs, warm))
        cells.append(("img_batch", lambda: image(pixb), plan.img16_runs, 1))
    for cell, fn, runs, w in cells:
        t = time_fn(fn, runs=share(runs), warmup=w, max_seconds=cap)
        row.samples.setdefault(cell, []).extend(t.samples)


def fmt_ms(x: float | None) -> str:
    return "–" if x is None else ms(x)


# -- the engines (each made fresh in every round by its factory, released after its turn) ------------------
def torch_engine(model: Any, pix1_t: Any, pixb_t: Any) -> Callable[[], Engine]:
    import torch

    def make() -> Engine:
        def text(x):
            with torch.inference_mode():
                return model.encode_text(torch.from_numpy(x), normalize=True)

        imgs = {1: pix1_t, len(pixb_t): pixb_t}

        def image(x):
            with torch.inference_mode():
                return model.encode_image(imgs[len(x)], normalize=True)

        return text, image, {}

    return make


def bundle_engine(path: Path, precision: str, threads: int) -> Callable[[], Engine]:
    from handler.core.runtime import load_bundle

    def make() -> Engine:
        t0 = time.perf_counter()
        emb = load_bundle(path, precision=precision, threads=threads, batch_size=64, lazy_visual=False)
        return emb.embed_tokens, emb.embed_pixels, {"text + image": time.perf_counter() - t0}

    return make


def onnx_engine(
    tpath: Path | None,
    vpath: Path | None,
    n_threads: int,
    *,
    level: str = "all",
    trim: bool = False,
    spinning: bool = True,
    bucket: int = 1,
) -> Callable[[], Engine]:
    from handler.core.encoders import trim_padding

    def make() -> Engine:
        fns: dict[str, Callable] = {}
        load: dict[str, float] = {}
        for tower, p in (("text", tpath), ("image", vpath)):
            if p is not None:
                t0 = time.perf_counter()
                fns[tower] = run_fn(session(p, n_threads, level, spinning=spinning))
                load[tower] = time.perf_counter() - t0
        text = fns.get("text")
        if text is not None and trim:
            raw = text

            def text(x: np.ndarray) -> np.ndarray:
                t = trim_padding(x)
                n = min(-(-t.shape[1] // bucket) * bucket, x.shape[1])  # padded up to a multiple of bucket
                return raw(x[:, :n])

        return text, fns.get("image"), load

    return make


def engine_rows(s: Setup) -> tuple[list[Row], list[Row]]:
    """The shipped engines and the tuning alternatives (on the fixed-length graphs)."""
    threads, bundle, fixed, tf_dir, pt_dir = s.threads, s.bundle, s.fixed, s.tf_dir, s.pt_dir
    trimmed, context_length = s.trimmed, s.context_length
    # tuning rows run the fixed-length graphs, against the fixed-length fp32 row
    tp, vp = fixed / "textual.onnx", fixed / "visual.onnx"
    rows: list[Row] = [
        Row("torch", "torch eager (open_clip)", torch_engine(s.model, s.pix1_t, s.pixb_t), by_length=True),
        Row(
            "onnx-fp32-fixed",
            "ONNX fp32, fixed-length text",
            bundle_engine(fixed, "fp32", threads),
            by_length=True,
        ),
        Row(
            "onnx-fp32",
            "ONNX fp32, variable-length text (bundle + runtime)",
            bundle_engine(bundle, "fp32", threads),
            by_length=True,
            trim=True,
        ),
        Row(
            "onnx-fp16", "ONNX fp16, variable-length text", bundle_engine(bundle, "fp16", threads), slow=True
        ),
        Row(
            "onnx-int8-fixed",
            "ONNX int8, fixed-length text",
            bundle_engine(fixed, "int8", threads),
            by_length=True,
        ),
        Row(
            "onnx-int8",
            "ONNX int8, variable-length text (bundle + runtime)",
            bundle_engine(bundle, "int8", threads),
            by_length=True,
            trim=True,
        ),
    ]
    tuning: list[Row] = [
        Row(
            "level-basic",
            "fp32, graph optimization BASIC (runtime: ALL)",
            onnx_engine(tp, vp, threads, level="basic"),
        ),
        Row(
            "level-extended",
            "fp32, graph optimization EXTENDED (runtime: ALL)",
            onnx_engine(tp, vp, threads, level="extended"),
        ),
    ]
    if threads > 1:
        tuning.append(Row("threads-1", "fp32, intra_op_num_threads=1", onnx_engine(tp, vp, 1)))
        tuning.append(
            Row(
                "no-spin",
                "fp32, intra-op spin-waiting off (session.intra_op.allow_spinning=0)",
                onnx_engine(tp, vp, threads, spinning=False),
            )
        )
    tuning += [
        Row(
            "ort-optimizer",
            "fp32, onnxruntime transformer optimizer (clip)",
            onnx_engine(tf_dir / "textual.onnx", tf_dir / "visual.onnx", threads),
        ),
        Row(
            "int8-per-tensor",
            "int8 per-tensor weights (bundle: per-channel)",
            onnx_engine(pt_dir / "textual.int8.onnx", pt_dir / "visual.int8.onnx", threads),
        ),
        Row(
            "bucket-8",
            f"fp32 variable-length, text padded up to a multiple of 8 ({trimmed.shape[1]} → "
            f"{min(-(-trimmed.shape[1] // 8) * 8, context_length)} of {context_length} tokens)",
            onnx_engine(bundle / "textual.onnx", None, threads, trim=True, bucket=8),
            trim=True,
        ),
    ]
    return rows, tuning


def measure(ctx: Context, s: Setup, sgemm: Sgemm, rows: list[Row], tuning: list[Row]) -> dict[str, float]:
    """Every engine once per round (interleaved with the sgemm samples); returns the sgemm rate."""
    plan, pixb = s.plan, s.pixb
    for rnd in range(plan.rounds):
        ctx.log(f"round {rnd + 1}/{plan.rounds} over {len(rows) + len(tuning)} engines ...")
        sgemm.sample(5 if ctx.quick else 8)
        for row in rows + tuning:
            measure_round(row, plan, s.ids, s.pix1, pixb, rnd, s.by_length)
            gc.collect()
    mm = sgemm.result()
    ctx.log(f"sgemm: onnxruntime {mm['ort_gflops']:.0f} GFLOP/s, numpy {mm['numpy_gflops']:.0f} GFLOP/s")
    for row in rows + tuning:
        ctx.log(
            f"{row.label}: text {fmt_ms(row.median('text'))}, image b1 {fmt_ms(row.median('img1'))}, "
            f"image b{len(pixb)} {fmt_ms(row.median('img_batch'))}/img"
        )
    return mm
