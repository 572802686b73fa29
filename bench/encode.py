"""Encode latency: torch eager vs the ONNX runtime (fp32 / fp16 / int8), against this machine's matmul rate.

Rows of the main table are what ships: open_clip in torch (the baselines' encoder) and the bundle as
exported (variable-length text: each batch runs up to its longest text's EOT token), run through
``handler.core.runtime.load_bundle`` (the runtime's own session options), plus the same bundle exported with
``--fixed-length-text`` (every text runs all context_length positions, as before). Text latency is
measured by query length (short, 20 tokens, context_length). The tuning table measures alternatives in the
same run: graph optimisation levels, onnxruntime's transformer optimizer, a pre-optimised model file, one
intra-op thread, int8 per-tensor, padding bucketed to a multiple of 8.

Inputs: text = one tokenized query ("a photo of a cat", 7 tokens) or a query of exactly N tokens; images =
seeded random pixels, already preprocessed (preprocessing is timed separately). Median of N timed runs
after warm-up runs.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    Context,
    Goal,
    Section,
    Timing,
    export_bundle,
    fmt,
    ms,
    random_checkpoint,
    ratio_text,
    register_quick_model,
    table,
    time_fn,
)

QUERY = "a photo of a cat"
TEXT_LENGTHS = (7, 20, 77)  # tokens incl. SOT and EOT: a short query, a sentence, the whole context
IMAGE_GFLOP_VITB32 = 8.82  # ViT-B-32 image tower, per image (given; the FLOP counter's number is shown too)
GOAL_TEXT_SPEEDUP = 2.5
GOAL_MATMUL_FACTOR = 1.15
GOAL_INT8_SPEEDUP = 2.0
PARITY_MAX_ABS = 1e-5


# -- measuring helpers ---------------------------------------------------------------------------------------
class Plan:
    """How many timed runs per cell, spread over interleaved rounds (every engine runs once per round, so
    load from other processes hits all engines alike)."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.rounds = 1 if quick else 3
        self.text_runs, self.img1_runs, self.img16_runs = (3, 3, 2) if quick else (24, 15, 6)
        self.warmup = 1 if quick else 2
        self.cap = 5.0 if quick else 20.0  # max timed seconds per cell (over all rounds)
        self.batch = 4 if quick else 16


class Sgemm:
    """An n x n x n fp32 MatMul through onnxruntime (same thread count) and numpy; sampled once per round,
    interleaved with the engines, so the rate is measured under the same conditions as they are."""

    def __init__(self, threads: int, n: int):
        import onnxruntime as ort
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("MatMul", ["A", "B"], ["C"])],
            "sgemm",
            [
                helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n]),
                helper.make_tensor_value_info("B", TensorProto.FLOAT, [n, n]),
            ],
            [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((n, n), dtype=np.float32)
        self.b = rng.standard_normal((n, n), dtype=np.float32)
        self.n = n
        self.ort: list[float] = []
        self.np: list[float] = []

    def sample(self, runs: int) -> None:
        self.ort += time_fn(
            lambda: self.sess.run(None, {"A": self.a, "B": self.b}), runs=runs, warmup=2
        ).samples
        self.np += time_fn(lambda: self.a @ self.b, runs=max(1, runs // 2), warmup=1).samples

    def result(self) -> dict[str, float]:
        flops = 2.0 * self.n**3
        return {
            "n": self.n,
            "ort_gflops": flops / Timing(self.ort).median / 1e9,
            "ort_gflops_best": flops / min(self.ort) / 1e9,
            "numpy_gflops": flops / Timing(self.np).median / 1e9,
            "samples": len(self.ort),
        }


def count_gflops(model: Any, ids: Any, pixels: Any) -> dict[str, float]:
    """FLOPs per text / per image counted by torch.utils.flop_counter (matmul-class ops), with the fused MHA
    fast path off (its native kernel is invisible to the counter) - a cross-check of analytic_gflops."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.inference_mode():
            with FlopCounterMode(display=False) as fc:
                model.encode_text(ids[:1], normalize=True)
            out["text"] = fc.get_total_flops() / 1e9
            with FlopCounterMode(display=False) as fc:
                model.encode_image(pixels[:1], normalize=True)
            out["image"] = fc.get_total_flops() / 1e9
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return out


def analytic_gflops(model: Any) -> dict[str, float]:
    """FLOPs (2 x multiply-adds) of one text / one image from the architecture (open_clip ViT + text
    transformer): per layer and token the QKV, output and MLP projections, plus the attention products
    (QK^T and AV over all tokens), the patch embedding and the final projection of the pooled token."""

    def tower(blocks: Any, tokens: int) -> float:
        total = 0.0
        for b in blocks:
            w = b.attn.embed_dim
            hidden = b.mlp.c_fc.out_features
            total += tokens * 2 * (4 * w * w + 2 * w * hidden) + 2 * 2 * tokens * tokens * w
        return total

    text_tokens = int(model.positional_embedding.shape[0])
    text = tower(model.transformer.resblocks, text_tokens)
    proj = model.text_projection
    text += 2 * (
        proj.shape[0] * proj.shape[1] if hasattr(proj, "shape") else proj.in_features * proj.out_features
    )
    v = model.visual
    grid = int(v.grid_size[0]) * int(v.grid_size[1])
    k = v.conv1.kernel_size
    width = v.conv1.out_channels
    image = 2 * grid * v.conv1.in_channels * k[0] * k[1] * width
    image += tower(v.transformer.resblocks, grid + 1)
    if v.proj is not None:
        image += 2 * v.proj.shape[0] * v.proj.shape[1]
    return {"text": text / 1e9, "image": image / 1e9}


def session(
    path: Path, threads: int, level: str = "all", optimized_out: Path | None = None, spinning: bool = True
):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    if optimized_out is not None:
        opts.optimized_model_filepath = str(optimized_out)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run(sess: Any) -> Callable[[np.ndarray], np.ndarray]:
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


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


def query_of_length(ids: np.ndarray, n: int) -> np.ndarray:
    """[1, context] ids of a query with exactly n tokens (SOT, n - 2 words of ``ids``' text repeated, EOT)."""
    row = ids[0]
    eot = int(np.flatnonzero(row)[-1])
    words = row[1:eot]
    out = np.zeros_like(ids)
    out[0, 0], out[0, n - 1] = row[0], row[eot]
    out[0, 1 : n - 1] = np.resize(words, n - 2)
    return out


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


# -- the measure ----------------------------------------------------------------------------------------------
def run(ctx: Context) -> Section:
    import onnxruntime as ort
    import open_clip
    import torch

    from export import parity as export_parity
    from handler.core.encoders import trim_padding
    from handler.core.runtime import load_bundle

    plan = Plan(ctx.quick)
    threads = ctx.threads
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    sec = Section("encode", "Encode latency (text, image) — torch vs ONNX fp32/fp16/int8, and tuning")

    # ---- artifacts: the bundle (exporter as is: variable-length text) and a fixed-length-text export
    bundle = export_bundle(ctx, precisions=("fp32", "fp16", "int8"))
    fixed = export_bundle(
        ctx,
        precisions=("fp32", "fp16", "int8"),
        tag=f"{ctx.model_name}-fixed-text",
        extra_args=("--fixed-length-text",),
    )
    ckpt = random_checkpoint(ctx)
    if ctx.quick:
        register_quick_model(ctx.cache)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(ctx.model_name, pretrained=str(ckpt))
    model.eval()
    tokenizer = open_clip.get_tokenizer(ctx.model_name)
    context_length = int(model.positional_embedding.shape[0])
    image_size = list(model.visual.image_size) if hasattr(model.visual, "image_size") else [224, 224]
    image_size = [int(s) for s in (image_size if isinstance(image_size, (list, tuple)) else [image_size] * 2)]

    pt_dir = ctx.cache / "int8-per-tensor" / fixed.name
    if not (pt_dir / "visual.int8.onnx").is_file():
        ctx.log("quantizing int8 per-tensor variants ...")
        pt_dir.mkdir(parents=True, exist_ok=True)
        _quantize(fixed / "textual.onnx", pt_dir / "textual.int8.onnx", per_channel=False)
        _quantize(fixed / "visual.onnx", pt_dir / "visual.int8.onnx", per_channel=False)
    tf_dir = ctx.cache / "ort-transformer-optimizer" / fixed.name
    if not (tf_dir / "fusions.json").is_file():
        ctx.log("running onnxruntime.transformers.optimizer (model_type=clip) ...")
        _transformer_optimize(fixed, tf_dir, model)
    fusion_stats: dict[str, Any] = json.loads((tf_dir / "fusions.json").read_text())

    model.eval()  # whatever ran before, the torch row measures open_clip in eval mode
    # ---- inputs
    ids = tokenizer([QUERY]).numpy().astype(np.int64)
    ids_t = torch.from_numpy(ids)
    rng = np.random.default_rng(0)
    pixb = rng.standard_normal((plan.batch, 3, *image_size), dtype=np.float32)
    pix1 = pixb[:1].copy()
    pixb_t, pix1_t = torch.from_numpy(pixb), torch.from_numpy(pix1)
    trimmed = trim_padding(ids)
    lengths = sorted({min(n, context_length) for n in TEXT_LENGTHS})
    by_length = {n: query_of_length(ids, n) for n in lengths}

    # ---- this machine's matmul rate and the models' FLOPs
    sgemm = Sgemm(threads, 512 if ctx.quick else 2048)
    counted = count_gflops(model, ids_t, pix1_t)
    analytic = analytic_gflops(model)
    image_gflop = analytic["image"] if ctx.quick else IMAGE_GFLOP_VITB32
    text_gflop = analytic["text"]

    # ---- the engines (each made fresh in every round by its factory, released after its turn)
    def torch_engine() -> Engine:
        def text(x):
            with torch.inference_mode():
                return model.encode_text(torch.from_numpy(x), normalize=True)

        imgs = {1: pix1_t, len(pixb): pixb_t}

        def image(x):
            with torch.inference_mode():
                return model.encode_image(imgs[len(x)], normalize=True)

        return text, image, {}

    def bundle_engine(precision: str, path: Path = bundle) -> Callable[[], Engine]:
        def make() -> Engine:
            t0 = time.perf_counter()
            emb = load_bundle(path, precision=precision, threads=threads, batch_size=64, lazy_visual=False)
            return emb.embed_tokens, emb.embed_pixels, {"text + image": time.perf_counter() - t0}

        return make

    def onnx_engine(
        tpath: Path | None,
        vpath: Path | None,
        *,
        level: str = "all",
        n_threads: int = threads,
        trim: bool = False,
        spinning: bool = True,
        bucket: int = 1,
    ) -> Callable[[], Engine]:
        def make() -> Engine:
            fns: dict[str, Callable] = {}
            load: dict[str, float] = {}
            for tower, p in (("text", tpath), ("image", vpath)):
                if p is not None:
                    t0 = time.perf_counter()
                    fns[tower] = _run(session(p, n_threads, level, spinning=spinning))
                    load[tower] = time.perf_counter() - t0
            text = fns.get("text")
            if text is not None and trim:
                raw = text

                def text(x: np.ndarray) -> np.ndarray:
                    t = trim_padding(x)
                    n = min(
                        -(-t.shape[1] // bucket) * bucket, x.shape[1]
                    )  # padded up to a multiple of bucket
                    return raw(x[:, :n])

            return text, fns.get("image"), load

        return make

    # tuning rows run the fixed-length graphs, against the fixed-length fp32 row
    tp, vp = fixed / "textual.onnx", fixed / "visual.onnx"
    rows: list[Row] = [
        Row("torch", "torch eager (open_clip)", torch_engine, by_length=True),
        Row("onnx-fp32-fixed", "ONNX fp32, fixed-length text", bundle_engine("fp32", fixed), by_length=True),
        Row(
            "onnx-fp32",
            "ONNX fp32, variable-length text (bundle + runtime)",
            bundle_engine("fp32"),
            by_length=True,
            trim=True,
        ),
        Row("onnx-fp16", "ONNX fp16, variable-length text", bundle_engine("fp16"), slow=True),
        Row("onnx-int8-fixed", "ONNX int8, fixed-length text", bundle_engine("int8", fixed), by_length=True),
        Row(
            "onnx-int8",
            "ONNX int8, variable-length text (bundle + runtime)",
            bundle_engine("int8"),
            by_length=True,
            trim=True,
        ),
    ]
    tuning: list[Row] = [
        Row(
            "level-basic", "fp32, graph optimization BASIC (runtime: ALL)", onnx_engine(tp, vp, level="basic")
        ),
        Row(
            "level-extended",
            "fp32, graph optimization EXTENDED (runtime: ALL)",
            onnx_engine(tp, vp, level="extended"),
        ),
    ]
    if threads > 1:
        tuning.append(Row("threads-1", "fp32, intra_op_num_threads=1", onnx_engine(tp, vp, n_threads=1)))
        tuning.append(
            Row(
                "no-spin",
                "fp32, intra-op spin-waiting off (session.intra_op.allow_spinning=0)",
                onnx_engine(tp, vp, spinning=False),
            )
        )
    tuning += [
        Row(
            "ort-optimizer",
            "fp32, onnxruntime transformer optimizer (clip)",
            onnx_engine(tf_dir / "textual.onnx", tf_dir / "visual.onnx"),
        ),
        Row(
            "int8-per-tensor",
            "int8 per-tensor weights (bundle: per-channel)",
            onnx_engine(pt_dir / "textual.int8.onnx", pt_dir / "visual.int8.onnx"),
        ),
        Row(
            "bucket-8",
            f"fp32 variable-length, text padded up to a multiple of 8 ({trimmed.shape[1]} → "
            f"{min(-(-trimmed.shape[1] // 8) * 8, context_length)} of {context_length} tokens)",
            onnx_engine(bundle / "textual.onnx", None, trim=True, bucket=8),
            trim=True,
        ),
    ]
    for rnd in range(plan.rounds):
        ctx.log(f"round {rnd + 1}/{plan.rounds} over {len(rows) + len(tuning)} engines ...")
        sgemm.sample(5 if ctx.quick else 8)
        for row in rows + tuning:
            measure_round(row, plan, ids, pix1, pixb, rnd, by_length)
            gc.collect()
    mm = sgemm.result()
    ctx.log(f"sgemm: onnxruntime {mm['ort_gflops']:.0f} GFLOP/s, numpy {mm['numpy_gflops']:.0f} GFLOP/s")
    for row in rows + tuning:
        ctx.log(
            f"{row.label}: text {fmt_ms(row.median('text'))}, image b1 {fmt_ms(row.median('img1'))}, "
            f"image b{len(pixb)} {fmt_ms(row.median('img_batch'))}/img"
        )
    torch_row, fp32 = rows[0], rows[1]  # tuning rows compare with the fixed-length fp32 row (same graphs)
    var32 = rows[2]

    # ---- session creation: the bundle's model vs a model pre-optimized offline and saved (cold-start cost)
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

    # ---- parity of the alternatives vs torch (the exporter's parity inputs), int8 cosine vs torch
    p_ids = tokenizer(export_parity.PARITY_TEXTS)
    p_pix = torch.stack([preprocess(im) for im in export_parity.parity_images()])
    with torch.inference_mode():
        ref_t = model.encode_text(p_ids, normalize=True).numpy()
        ref_v = model.encode_image(p_pix, normalize=True).numpy()
    p_ids_np, p_pix_np = p_ids.numpy().astype(np.int64), p_pix.numpy()

    parity_rows = []
    for r in rows + tuning:
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
    # ---- where the fp32 time goes: onnxruntime's own profiler, per operator type
    profile = {
        "text b1 (77 tokens)": op_profile(tp, threads, ids, 3 if ctx.quick else 5, ctx),
        f"image b{len(pixb)}": op_profile(vp, threads, pixb, 2 if ctx.quick else 3, ctx),
        f"int8 image b{len(pixb)}": op_profile(
            bundle / "visual.int8.onnx", threads, pixb, 2 if ctx.quick else 3, ctx
        ),
    }
    # ---- preprocessing (per image), runtime vs open_clip, on a 640x480 JPEG
    prep = _preprocess_timing(bundle, preprocess, plan, ctx)
    # tokenizer
    runtime_tokenize = load_bundle(bundle, threads=threads).tokenize
    tok_rt = time_fn(lambda: runtime_tokenize([QUERY]), runs=50, warmup=3)
    tok_oc = time_fn(lambda: tokenizer([QUERY]), runs=50, warmup=3)

    # ---- tables
    all_rows = rows + tuning
    cells = ["text", "img1", "img_batch"]

    def speed(r: Row, what: str, base: Row) -> float | None:
        a, b = base.median(what), r.median(what)
        return None if a is None or b is None else a / b

    def frac(r: Row, what: str) -> float | None:
        t = r.median(what)
        if t is None:
            return None
        if what == "text" and r.trim:
            return None  # fewer positions than the FLOPs below count
        g = text_gflop if what == "text" else image_gflop
        return g / t / mm["ort_gflops"]

    bcol = f"image b{len(pixb)} per image"
    head = [
        "Engine",
        f"text b1 ({trimmed.shape[1]} tokens)",
        "image b1",
        bcol,
        "text vs torch",
        "image b1 vs torch",
        f"image b{len(pixb)} vs torch",
        "text: % of sgemm",
        "image b1: % of sgemm",
        f"b{len(pixb)}: % of sgemm",
    ]

    def line(r: Row) -> list[Any]:
        return [
            r.label,
            *[fmt_ms(r.median(c)) for c in cells],
            *[_x(speed(r, c, torch_row)) for c in cells],
            *[_pct(frac(r, c)) for c in cells],
        ]

    arch_note = "" if ctx.quick else f"from the architecture: {analytic['image']:.2f}; "
    sec.add(
        f"ViT-B-32 architecture, random init (seed 0){' — **quick mode: tiny model**' if ctx.quick else ''}; "
        f"**{threads} threads** everywhere (torch.set_num_threads({threads}), onnxruntime intra_op_num_threads="
        f"{threads}, inter_op 1); median of up to {plan.text_runs}/{plan.img1_runs}/{plan.img16_runs} runs "
        f"(text / image b1 / image b{len(pixb)}), collected over {plan.rounds} interleaved round(s) (each round "
        f"loads every engine, runs {plan.warmup} warm-up call(s) per cell, then its share of the timed runs, so "
        f"load from other processes hits all engines alike); at most {plan.cap:.0f} s of timed runs per cell "
        "(fp16: 1 warm-up, ≤ 3 runs). Encoder only: tokenization and image preprocessing are timed separately "
        "below.",
        f"**Matrix-multiply limit of this machine (same run):** {mm['n']}×{mm['n']} fp32 MatMul through "
        f"onnxruntime with {threads} threads: **{mm['ort_gflops']:.0f} GFLOP/s** (median of {mm['samples']} runs "
        f"sampled in every round, between the engines; best run "
        f"{mm['ort_gflops_best']:.0f}); numpy sgemm {mm['numpy_gflops']:.0f} GFLOP/s. FLOPs used: image tower "
        f"**{image_gflop:.2f} GFLOP**/image ({'from the architecture' if ctx.quick else 'given'}; "
        f"{arch_note}"
        f"torch FLOP counter: {counted['image']:.2f}), text tower "
        f"**{text_gflop:.2f} GFLOP**/text (from the architecture: {context_length} tokens × layers × (QKV, "
        "output, MLP projections + attention products) + final projection; the exported graph always runs all "
        f"{context_length} positions; torch FLOP counter, which omits the attention products: "
        f"{counted['text']:.2f}). '% of sgemm' = (FLOPs / latency) / fp32 sgemm rate; for int8 it exceeds "
        "100% because int8 VNNI/AMX kernels outrun fp32 sgemm (it measures speed, not efficiency); not given "
        "for variable-length text, which runs fewer positions.",
        "### Shipped engines",
        "'variable-length' is the exporter's default (`text.variable_length` in the manifest): the runtime "
        "drops the padding after the longest text's EOT token in each batch; 'fixed-length' is the same model "
        f"exported with `--fixed-length-text` (all {context_length} positions, as bundles were before).",
        table(head, [line(r) for r in rows]),
        "### Text latency by query length (batch 1)",
        f"One query of exactly N tokens (SOT + words + EOT; {context_length} = the whole context). torch and "
        "fixed-length graphs always run every position; variable-length graphs run N.",
        table(
            ["Engine", *[f"{n} tokens" for n in lengths], *[f"{n} tokens vs torch" for n in lengths]],
            [
                [
                    r.label,
                    *[fmt_ms(r.median(f"text{n}")) for n in lengths],
                    *[_x(speed(r, f"text{n}", torch_row)) for n in lengths],
                ]
                for r in rows
                if r.by_length
            ],
        ),
        "### Tuning (same run, same inputs)",
        "Alternatives to the shipped fp32/int8 runtime, on the fixed-length graphs; speed-ups are against the "
        "fixed-length ONNX fp32 row "
        f"({fmt_ms(fp32.median('text'))} text, {fmt_ms(fp32.median('img1'))} image b1, "
        f"{fmt_ms(fp32.median('img_batch'))} image b{len(pixb)}).",
        table(
            [
                "Variant",
                "text b1",
                "image b1",
                bcol,
                "text vs ONNX fp32",
                "image b1 vs fp32",
                f"b{len(pixb)} vs fp32",
                "session load text / image",
            ],
            [
                [
                    r.label,
                    *[fmt_ms(r.median(c)) for c in cells],
                    *[_x(speed(r, c, fp32)) for c in cells],
                    " / ".join(ms(r.load_s[k]) for k in ("text", "image") if k in r.load_s) or "–",
                ]
                for r in tuning
            ],
        ),
        "Session creation (cold-start cost; median of 3): the shipped model files vs files optimized offline "
        "and saved (`SessionOptions.optimized_model_filepath`). Level-ALL files are specific to the CPU they "
        "were optimized on (onnxruntime's warning); EXTENDED files are portable.",
        table(["Model file", "text session", "image session"], load_rows),
        "Parity of the alternatives against torch on the exporter's parity inputs "
        f"({len(export_parity.PARITY_TEXTS)} texts incl. empty, unicode, over-long; "
        f"{len(p_pix_np)} images), one text per call (variable-length rows: each text trimmed to its own "
        "tokens):",
        table(["Variant", "text max-abs", "image max-abs", "int8 cosine min", "fp32 parity"], parity_rows),
    )
    kinds = [
        "MatMul / Gemm (fp32)",
        "int8 MatMul + dynamic quantization",
        "Softmax",
        "GELU / BiasGelu",
        "LayerNorm",
        "Transpose / Reshape / copies",
        "Add / Mul / elementwise",
        "other",
    ]
    sec.add(
        "Where the time goes: onnxruntime's profiler on the shipped graphs (share of kernel time per operator "
        "kind; session level ALL, same threads):",
        table(["Graph", *kinds], [[g, *[_pct(p.get(k, 0.0)) for k in kinds]] for g, p in profile.items()]),
    )
    bt = var32.parity.get("text_batched_max_abs")
    if bt is not None:
        sec.add(
            f"Trimmed text in one batch of all {len(p_ids_np)} parity texts (trimmed to the longest): "
            f"max-abs {fmt(bt)} vs torch."
        )
    if fusion_stats:
        sec.add(
            "onnxruntime transformer optimizer fusions (model_type=clip): "
            + "; ".join(
                f"{t}: " + ", ".join(f"{k} {v}" for k, v in s.items() if v) for t, s in fusion_stats.items()
            )
            + ". Attention is not fused (the exported attention pattern is not one the optimizer matches); "
            "LayerNorm/GELU fusions are what onnxruntime's own ALL level does at session creation already."
        )
    sec.add(
        "### Around the encoder",
        table(
            ["Step", "runtime (handler)", "open_clip / torchvision"],
            [
                ["tokenize 1 query", ms(tok_rt.median), ms(tok_oc.median)],
                [
                    "preprocess 1 image (640×480 JPEG bytes → tensor)",
                    ms(prep["runtime"]),
                    ms(prep["open_clip"]),
                ],
            ],
        ),
    )

    # ---- goals
    t_fp32, t_int8 = var32, rows[5]  # what ships: variable-length text
    text_x = speed(t_fp32, "text", torch_row)
    int8_text_x = speed(t_int8, "text", torch_row)
    fixed_x = speed(fp32, "text", torch_row)
    full = f"text{lengths[-1]}"
    full_x = speed(t_fp32, full, torch_row)
    sec.goals.append(
        Goal(
            f"Text encode vs torch (batch 1, a {trimmed.shape[1]}-token query)",
            f"≥ {GOAL_TEXT_SPEEDUP}x",
            f"{_x(text_x)} fp32 (int8 {_x(int8_text_x)}; fixed-length fp32 {_x(fixed_x)}; "
            f"{lengths[-1]} tokens: fp32 {_x(full_x)})",
            text_x is not None and text_x >= GOAL_TEXT_SPEEDUP,
            ""
            if text_x and text_x >= GOAL_TEXT_SPEEDUP
            else f"short by {GOAL_TEXT_SPEEDUP / text_x:.2f}x: torch already runs the {context_length}-token tower at "
            f"{_pct(frac(torch_row, 'text'))} of the sgemm rate; the variable-length graph runs "
            f"{trimmed.shape[1]} of {context_length} positions, so what remains is per-call overhead",
        )
    )
    limit_b = image_gflop / mm["ort_gflops"]  # seconds per image at the sgemm rate
    fb = t_fp32.median("img_batch") / limit_b
    f1 = t_fp32.median("img1") / limit_b
    sec.goals.append(
        Goal(
            "Image encode fp32 vs matmul limit",
            f"≤ {GOAL_MATMUL_FACTOR}x of FLOPs/sgemm-rate",
            f"{fb:.2f}x at batch {len(pixb)} ({_pct(1 / fb)} of sgemm); {f1:.2f}x at batch 1",
            fb <= GOAL_MATMUL_FACTOR,
            ""
            if fb <= GOAL_MATMUL_FACTOR
            else f"over by {fb / GOAL_MATMUL_FACTOR:.2f}x: at batch {len(pixb)} fp32 MatMul/Gemm kernels are "
            f"{_pct(profile[f'image b{len(pixb)}'].get('MatMul / Gemm (fp32)', 0))} of the time (and their "
            "50-token / 64-wide attention products run below the 2048³ sgemm rate); Softmax, GELU, LayerNorm and "
            "layout copies take the rest (profile table)",
        )
    )
    i8 = {c: speed(t_int8, c, t_fp32) for c in cells}
    ok8 = all(v is not None and v >= GOAL_INT8_SPEEDUP for v in i8.values())
    worst = min(v for v in i8.values() if v is not None)
    sec.goals.append(
        Goal(
            "int8 vs fp32",
            f"≥ {GOAL_INT8_SPEEDUP}x",
            f"text {_x(i8['text'])}, image b1 {_x(i8['img1'])}, image b{len(pixb)} {_x(i8['img_batch'])}",
            ok8,
            ""
            if ok8
            else f"worst cell short by {GOAL_INT8_SPEEDUP / worst:.2f}x: dynamic quantization quantizes only the weight "
            "MatMuls; in the int8 image graph the fp32 remainder (attention products, Softmax, GELU, LayerNorm, "
            f"copies) is {_pct(1 - profile[f'int8 image b{len(pixb)}'].get('int8 MatMul + dynamic quantization', 0))} "
            "of the time",
        )
    )

    # ---- plot
    sec.plots.append(_plot(ctx, rows, len(pixb)))
    sec.data.update(
        {
            "threads": threads,
            "sgemm": mm,
            "gflop": {"text": text_gflop, "image": image_gflop, "counted": counted, "analytic": analytic},
            "rows": {
                r.key: {
                    "label": r.label,
                    **{c: r.median(c) for c in cells},
                    "load_s": r.load_s,
                    "parity": r.parity,
                    **{f"text{n}": r.median(f"text{n}") for n in lengths},
                }
                for r in all_rows
            },
            "text_lengths": lengths,
            "tokenize_s": {"runtime": tok_rt.median, "open_clip": tok_oc.median},
            "preprocess_s": prep,
            "fusions": fusion_stats,
            "ort": ort.__version__,
            "profile": profile,
        }
    )
    return sec


def _op_kind(op: str) -> str:
    if op in ("MatMul", "Gemm", "FusedMatMul", "FusedGemm", "Conv", "FusedConv"):
        return "MatMul / Gemm (fp32)"
    if op in (
        "MatMulInteger",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "ConvInteger",
    ):
        return "int8 MatMul + dynamic quantization"
    if op == "Softmax":
        return "Softmax"
    if "Gelu" in op or op == "Erf":
        return "GELU / BiasGelu"
    if "LayerNorm" in op or op in ("LayerNormalization", "SkipLayerNormalization"):
        return "LayerNorm"
    if op in (
        "Transpose",
        "Reshape",
        "Concat",
        "Slice",
        "Gather",
        "Squeeze",
        "Unsqueeze",
        "Expand",
        "Split",
        "Cast",
        "Identity",
        "ReorderInput",
        "ReorderOutput",
        "Shape",
    ):
        return "Transpose / Reshape / copies"
    if op in (
        "Add",
        "Mul",
        "Div",
        "Sub",
        "Sqrt",
        "Pow",
        "Where",
        "Equal",
        "Mod",
        "ReduceL2",
        "Clip",
        "ArgMax",
    ):
        return "Add / Mul / elementwise"
    return "other"


def op_profile(path: Path, threads: int, x: np.ndarray, runs: int, ctx: Context) -> dict[str, float]:
    """Share of kernel time per operator kind, from onnxruntime's profiler (a separate session)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.enable_profiling = True
    opts.profile_file_prefix = str(ctx.scratch("encode-profile") / "ort")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x})
    for _ in range(runs):
        sess.run(None, {name: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    totals: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            kind = _op_kind(e.get("args", {}).get("op_name", ""))
            totals[kind] = totals.get(kind, 0.0) + float(e.get("dur", 0))
    total = sum(totals.values()) or 1.0
    return {k: v / total for k, v in totals.items()}


def _n(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _x(v: float | None) -> str:
    return "–" if v is None else ratio_text(v)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.0f}%"


def _quantize(src: Path, dst: Path, *, per_channel: bool) -> None:
    """The exporter's int8 recipe (export.onnx_export.to_int8) with per_channel as a parameter."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(
            str(pre),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
    finally:
        pre.unlink(missing_ok=True)


def _transformer_optimize(bundle: Path, out: Path, model: Any) -> dict[str, Any]:
    import contextlib
    import io

    from onnxruntime.transformers.optimizer import optimize_model

    out.mkdir(parents=True, exist_ok=True)
    text_heads = int(model.transformer.resblocks[0].attn.num_heads)
    text_width = int(model.transformer.width)
    vis_heads = int(model.visual.transformer.resblocks[0].attn.num_heads)
    vis_width = int(model.visual.transformer.width)
    stats = {}
    for tower, heads, width in (("textual", text_heads, text_width), ("visual", vis_heads, vis_width)):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            m = optimize_model(
                str(bundle / f"{tower}.onnx"),
                model_type="clip",
                num_heads=heads,
                hidden_size=width,
                opt_level=0,
                use_gpu=False,
            )
        stats[tower] = {k: int(v) for k, v in m.get_fused_operator_statistics().items()}
        m.save_model_to_file(str(out / f"{tower}.onnx"))
    (out / "fusions.json").write_text(json.dumps(stats))
    return stats


def _preprocess_timing(bundle: Path, oc_preprocess: Any, plan: Plan, ctx: Context) -> dict[str, float]:
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


def _plot(ctx: Context, rows: list[Row], batch: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [("text", "text b1"), ("img1", "image b1"), ("img_batch", f"image b{batch} (per image)")]
    fig, ax = plt.subplots(figsize=(10, 5.6))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        vals = [(r.median(c) or 0) * 1e3 for c, _ in cells]
        xs = [j + i * width for j in range(len(cells))]
        bars = ax.bar(xs, vals, width, label=r.label.replace("**", ""))
        for x, v in zip(xs, vals, strict=True):
            if v:
                ax.text(x, v, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(cells))], [c for _, c in cells])
    ax.set_ylabel("latency, ms (median; lower is better)")
    ax.set_yscale("log")
    ax.set_title(f"Encode latency, {ctx.model_name}, {ctx.threads} threads")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    del bars
    fig.tight_layout()
    name = "encode_latency.png"
    fig.savefig(ctx.plots / name, dpi=110)
    plt.close(fig)
    return name
