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

from bench.common import Context, Section
from bench.encode.measuring import IMAGE_GFLOP_VITB32, Plan, Sgemm, analytic_gflops, count_gflops

__all__ = ["IMAGE_GFLOP_VITB32", "Sgemm", "run"]


def run(ctx: Context) -> Section:
    import torch

    from bench.encode import engines, goals, sections, setup, tables

    plan = Plan(ctx.quick)
    threads = ctx.threads
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    sec = Section("encode", "Encode latency (text, image) — torch vs ONNX fp32/fp16/int8, and tuning")
    # artifacts (the bundle as exported, a fixed-length-text export, tuning variants), model and inputs
    s = setup.prepare(ctx, plan)
    # this machine's matmul rate and the models' FLOPs
    sgemm = Sgemm(threads, 512 if ctx.quick else 2048)
    counted = count_gflops(s.model, s.ids_t, s.pix1_t)
    analytic = analytic_gflops(s.model)
    image_gflop = analytic["image"] if ctx.quick else IMAGE_GFLOP_VITB32
    gflop = {"text": analytic["text"], "image": image_gflop, "counted": counted, "analytic": analytic}
    # the engines, timed in interleaved rounds
    rows, tuning = engines.engine_rows(s)
    mm = engines.measure(ctx, s, sgemm, rows, tuning)
    # session creation, parity vs torch, operator profile, the steps around the encoder
    load_rows = sections.session_creation_rows(ctx, s)
    parity = sections.parity(s, rows + tuning)
    profile = sections.profiles(ctx, s)
    prep = sections.preprocess_timing(s.bundle, s.preprocess, plan, ctx)
    tokenize = sections.tokenize_timing(s)
    res = tables.Results(rows, tuning, mm, gflop, load_rows, parity, profile, prep, tokenize)
    # the report: tables, goals, plot, data
    tables.add_tables(sec, ctx, s, res)
    goals.add_goals(sec, s, res)
    sec.plots.append(goals.plot(ctx, rows, len(s.pixb)))
    goals.add_data(sec, ctx, s, res)
    return sec
