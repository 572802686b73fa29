"""The encode section's text: the measured rows as tables (shipped engines, text by query length, tuning,
session creation, parity, operator profile, the steps around the encoder)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.common import Context, Section, fmt, ms, ratio_text, table
from bench.encode.engines import Row, fmt_ms
from bench.encode.sections import Parity
from bench.encode.setup import Setup

CELLS = ["text", "img1", "img_batch"]
KINDS = [
    "MatMul / Gemm (fp32)",
    "int8 MatMul + dynamic quantization",
    "Softmax",
    "GELU / BiasGelu",
    "LayerNorm",
    "Transpose / Reshape / copies",
    "Add / Mul / elementwise",
    "other",
]


@dataclass
class Results:
    """What the encode benchmark measured, for its tables, goals and data."""

    rows: list[Row]  # shipped engines: torch, fp32 fixed, fp32, fp16, int8 fixed, int8
    tuning: list[Row]  # alternatives, against the fixed-length fp32 row
    mm: dict[str, float]  # this machine's sgemm rate (Sgemm.result)
    gflop: dict[str, Any]  # text, image (used), counted, analytic
    load_rows: list[list[str]]  # session creation table
    parity: Parity
    profile: dict[str, dict[str, float]]
    prep: dict[str, float]  # preprocessing seconds per image: runtime, open_clip
    tokenize: dict[str, float]  # tokenizing seconds per query: runtime, open_clip


def speed(r: Row, what: str, base: Row) -> float | None:
    a, b = base.median(what), r.median(what)
    return None if a is None or b is None else a / b


def frac(r: Row, what: str, res: Results) -> float | None:
    """Share of this machine's sgemm rate the row's FLOPs run at (None: not comparable)."""
    t = r.median(what)
    if t is None:
        return None
    if what == "text" and r.trim:
        return None  # fewer positions than the FLOPs below count
    g = res.gflop["text"] if what == "text" else res.gflop["image"]
    return g / t / res.mm["ort_gflops"]


def add_tables(sec: Section, ctx: Context, s: Setup, res: Results) -> None:
    threads, plan, pixb, trimmed, lengths = s.threads, s.plan, s.pixb, s.trimmed, s.lengths
    context_length, fusion_stats = s.context_length, s.fusion_stats
    rows, tuning, mm, profile, prep = res.rows, res.tuning, res.mm, res.profile, res.prep
    counted, analytic = res.gflop["counted"], res.gflop["analytic"]
    text_gflop, image_gflop = res.gflop["text"], res.gflop["image"]
    torch_row, fp32, var32 = rows[0], rows[1], rows[2]
    cells = CELLS

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
            *[fmt_x(speed(r, c, torch_row)) for c in cells],
            *[fmt_pct(frac(r, c, res)) for c in cells],
        ]

    arch_note = "" if ctx.quick else f"from the architecture: {analytic['image']:.2f}; "
    sec.add(
        f"ViT-B-32 architecture, random init (seed 0){' — **quick mode: tiny model**' if ctx.quick else ''}; "
        f"**{threads} threads** everywhere (torch.set_num_threads({threads}), onnxruntime "
        f"intra_op_num_threads={threads}, inter_op 1); median of up to "
        f"{plan.text_runs}/{plan.img1_runs}/{plan.img16_runs} runs (text / image b1 / image b{len(pixb)}), "
        f"collected over {plan.rounds} interleaved round(s) (each round loads every engine, runs "
        f"{plan.warmup} warm-up call(s) per cell, then its share of the timed runs, so load from other "
        f"processes hits all engines alike); at most {plan.cap:.0f} s of timed runs per cell (fp16: 1 "
        "warm-up, ≤ 3 runs). Encoder only: tokenization and image preprocessing are timed separately below.",
        f"**Matrix-multiply limit of this machine (same run):** {mm['n']}×{mm['n']} fp32 MatMul through "
        f"onnxruntime with {threads} threads: **{mm['ort_gflops']:.0f} GFLOP/s** (median of {mm['samples']} "
        f"runs sampled in every round, between the engines; best run {mm['ort_gflops_best']:.0f}); numpy "
        f"sgemm {mm['numpy_gflops']:.0f} GFLOP/s. FLOPs used: image tower **{image_gflop:.2f} GFLOP**/image "
        f"({'from the architecture' if ctx.quick else 'given'}; {arch_note}torch FLOP counter: "
        f"{counted['image']:.2f}), text tower **{text_gflop:.2f} GFLOP**/text (from the architecture: "
        f"{context_length} tokens × layers × (QKV, output, MLP projections + attention products) + final "
        f"projection; the exported graph always runs all {context_length} positions; torch FLOP counter, "
        f"which omits the attention products: {counted['text']:.2f}). '% of sgemm' = (FLOPs / latency) / "
        "fp32 sgemm rate; for int8 it exceeds 100% because int8 VNNI/AMX kernels outrun fp32 sgemm (it "
        "measures speed, not efficiency); not given for variable-length text, which runs fewer positions.",
        "### Shipped engines",
        "'variable-length' is the exporter's default (`text.variable_length` in the manifest): the runtime "
        "drops the padding after the longest text's EOT token in each batch; "
        "'fixed-length' is the same model exported with `--fixed-length-text` "
        f"(all {context_length} positions, as bundles were before).",
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
                    *[fmt_x(speed(r, f"text{n}", torch_row)) for n in lengths],
                ]
                for r in rows
                if r.by_length
            ],
        ),
        "### Tuning (same run, same inputs)",
        "Alternatives to the shipped fp32/int8 runtime, on the fixed-length graphs; speed-ups are against "
        f"the fixed-length ONNX fp32 row ({fmt_ms(fp32.median('text'))} text, {fmt_ms(fp32.median('img1'))} "
        f"image b1, {fmt_ms(fp32.median('img_batch'))} image b{len(pixb)}).",
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
                    *[fmt_x(speed(r, c, fp32)) for c in cells],
                    " / ".join(ms(r.load_s[k]) for k in ("text", "image") if k in r.load_s) or "–",
                ]
                for r in tuning
            ],
        ),
        "Session creation (cold-start cost; median of 3): the shipped model files vs files optimized offline "
        "and saved (`SessionOptions.optimized_model_filepath`). Level-ALL files are specific to the CPU they "
        "were optimized on (onnxruntime's warning); EXTENDED files are portable.",
        table(["Model file", "text session", "image session"], res.load_rows),
        "Parity of the alternatives against torch on the exporter's parity inputs "
        f"({res.parity.n_texts} texts incl. empty, unicode, over-long; "
        f"{res.parity.n_images} images), one text per call (variable-length rows: each text trimmed to its "
        "own tokens):",
        table(
            ["Variant", "text max-abs", "image max-abs", "int8 cosine min", "fp32 parity"], res.parity.rows
        ),
    )
    sec.add(
        "Where the time goes: onnxruntime's profiler on the shipped graphs (share of kernel time per "
        "operator kind; session level ALL, same threads):",
        table(["Graph", *KINDS], [[g, *[fmt_pct(p.get(k, 0.0)) for k in KINDS]] for g, p in profile.items()]),
    )
    bt = var32.parity.get("text_batched_max_abs")
    if bt is not None:
        sec.add(
            f"Trimmed text in one batch of all {res.parity.n_texts} parity texts (trimmed to the longest): "
            f"max-abs {fmt(bt)} vs torch."
        )
    if fusion_stats:
        sec.add(
            "onnxruntime transformer optimizer fusions (model_type=clip): "
            + "; ".join(
                f"{t}: " + ", ".join(f"{k} {v}" for k, v in st.items() if v) for t, st in fusion_stats.items()
            )
            + ". Attention is not fused (the exported attention pattern is not one the optimizer matches); "
            "LayerNorm/GELU fusions are what onnxruntime's own ALL level does at session creation already."
        )
    sec.add(
        "### Around the encoder",
        table(
            ["Step", "runtime (handler)", "open_clip / torchvision"],
            [
                ["tokenize 1 query", ms(res.tokenize["runtime"]), ms(res.tokenize["open_clip"])],
                [
                    "preprocess 1 image (640×480 JPEG bytes → tensor)",
                    ms(prep["runtime"]),
                    ms(prep["open_clip"]),
                ],
            ],
        ),
    )


def fmt_x(v: float | None) -> str:
    return "–" if v is None else ratio_text(v)


def fmt_pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.0f}%"
