"""Cold start: a new process until the first answered text query, and its peak memory.

* ours: ``handler.lambda_function.lambda_handler`` (import = Lambda init: settings, bundle, index) invoked
  with an API Gateway v2 ``POST /search`` event holding a text query; MODEL_URI / INDEX_URI point to a
  local ViT-B-32 bundle and a 300-vector index (local directories: no S3 download in these numbers);
* baseline B: ``python -m uvicorn bench.baseline_api:app`` (open_clip in torch behind FastAPI, loading the
  same checkpoint file the bundle was exported from with ``create_model_and_transforms(pretrained=path)``,
  as an OpenCLIP API does after its download), polled with ``POST /embeddings`` {"text": ...} until the
  first 200.

Ours runs as shipped (MODEL_VERIFY=off as for a baked bundle, the model loading while the web stack imports,
the visual session created in the background) and with each idea taken back: MODEL_VERIFY=sha256,
sequential loading, no background visual session. Right after the first text answer each process answers
an image query: its latency shows whether the visual tower's load is still on the request path.

Time is wall clock from just before the process is spawned to the answer (interpreter start-up, imports
and model loading included). Peak memory is the process's VmHWM (/proc/PID/status) right after it
answered. The files were read before (page cache warm), as on a Lambda whose image layers are cached.
"""

from __future__ import annotations

from bench.coldstart.breakdown import breakdown
from bench.coldstart.processes import build_index, measure
from bench.coldstart.report import add_report, plot
from bench.common import Context, Section, export_bundle, model_config_file, random_checkpoint


def run(ctx: Context) -> Section:
    sec = Section("coldstart", "Cold start — new process to first text-search answer")
    bundle = export_bundle(ctx, precisions=("fp32", "fp16", "int8"))
    ckpt = random_checkpoint(ctx)
    config = model_config_file(ctx)
    index = build_index(ctx, bundle)
    repeats = 1 if ctx.quick else 3
    ours, base = measure(ctx, bundle, index, ckpt, config, repeats)
    parts = breakdown(bundle, index, ctx)
    add_report(sec, ctx, ours, base, parts, repeats)
    sec.plots.append(plot(ctx, ours, base))
    sec.data.update({"ours": ours, "baseline_b": base, "threads": ctx.threads, "breakdown": parts})
    return sec
