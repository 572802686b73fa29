"""The cold starts themselves: our Lambda entry in a fresh ``python -c`` child (as shipped and with each
idea taken back), baseline B as a uvicorn process polled until its first answer, and the interleaved
repeats of both."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, Context
from events.builders import http_api

MARK = "@@BENCH@@"
QUERY = "a red circle"
CHILD = r"""
import time
t_start = time.time()
import json, os, sys
from pathlib import Path
event = json.loads(Path(sys.argv[1]).read_text())
image_event = json.loads(Path(sys.argv[2]).read_text())
if os.environ.get("BENCH_SEQUENTIAL") == "1":  # idea taken back: load the model after the web stack imports
    import handler.state
    handler.state.ServiceState.start = lambda self: self
if os.environ.get("BENCH_NO_BG_VISUAL") == "1":  # idea taken back: visual session on the first image query
    import handler.core.runtime as rt
    _real = rt.load_bundle
    def _lazy(*a, **k):
        k["background_visual"] = False
        return _real(*a, **k)
    rt.load_bundle = _lazy
import handler.lambda_function as lf
t_init = time.time()
resp = lf.lambda_handler(event, None)
t_answer = time.time()
def mem():
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmHWM", "VmRSS"):
            out[k] = int(v.split()[0]) * 1024
    return out
status = mem()
image_resp = lf.lambda_handler(image_event, None)
t_image = time.time()
status["VmHWM_after_image"] = mem()["VmHWM"]
body = json.loads(resp.get("body") or "{}")
print("@@BENCH@@" + json.dumps({"t_start": t_start, "t_init": t_init, "t_answer": t_answer,
      "t_image": t_image, "status_code": resp.get("statusCode"), "results": len(body.get("results") or []),
      "image_status": image_resp.get("statusCode"),
      "error": body.get("error"), "init_ms": lf.INIT_MS, "timings": lf.state.timings, **status}), flush=True)
"""


def api_event(body: dict[str, Any]) -> dict[str, Any]:
    """An API Gateway HTTP API (payload v2) event for POST /search with a JSON body."""
    return http_api("POST", "/search", json.dumps(body), "application/json")


def build_index(ctx: Context, bundle: Path, n: int = 300) -> Path:
    from handler.core.bundle import read_manifest
    from index_builder.publish import publish
    from index_builder.version_write import write_version

    manifest = read_manifest(bundle).manifest
    out = ctx.scratch("coldstart-index")
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((n, int(manifest["embed_dim"])), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    items = [{"id": f"img_{i:04d}", "uri": f"img_{i:04d}.jpg"} for i in range(n)]
    m = write_version(
        str(out),
        "v1",
        vectors=vecs,
        items=items,
        manifest_fields={"model_fingerprint": manifest["model_fingerprint"], "precision": "fp32"},
    )
    publish(str(out), "v1", m)
    return out


# Variants of our cold start: what ships, then each idea taken back (environment of the child process).
SHIPPED = {"MODEL_VERIFY": "off"}
VARIANTS = {
    "shipped": (
        "as shipped: MODEL_VERIFY=off (baked bundle), load || imports, visual in background",
        SHIPPED,
    ),
    "verify": (
        "with MODEL_VERIFY=sha256 (sha256 of the bundle's files at every start)",
        {**SHIPPED, "MODEL_VERIFY": "sha256"},
    ),
    "sequential": (
        "with the model loaded after the imports (no thread)",
        {**SHIPPED, "BENCH_SEQUENTIAL": "1"},
    ),
    "lazy-visual": (
        "with the visual session created by the first image query",
        {**SHIPPED, "BENCH_NO_BG_VISUAL": "1"},
    ),
}


def _png(size: int = 64) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def ours_once(
    bundle: Path, index: Path, ctx: Context, precision: str, variant: str = "shipped"
) -> dict[str, Any]:
    import base64

    scratch = ctx.scratch("coldstart-child")
    event, image_event = scratch / "event.json", scratch / "image-event.json"
    event.write_text(json.dumps(api_event({"text": QUERY, "k": 5})))
    image_event.write_text(json.dumps(api_event({"image": base64.b64encode(_png()).decode(), "k": 5})))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODEL_", "INDEX_", "BENCH_"))}
    env.update(
        MODEL_URI=str(bundle),
        INDEX_URI=str(index),
        CACHE_DIR=str(scratch / "cache"),
        LOG_LEVEL="WARNING",
        ORT_THREADS=str(ctx.threads),
        PRECISION=precision,
        PYTHONPATH=str(REPO),
        **VARIANTS[variant][1],
    )
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(event), str(image_event)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"lambda cold start child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    r = json.loads(line[len(MARK) :])
    if r["status_code"] != 200 or not r["results"]:
        raise RuntimeError(
            f"lambda answered {r['status_code']} with {r['results']} results: {r.get('error')}"
        )
    if r["image_status"] != 200:
        raise RuntimeError(f"lambda answered the image query with {r['image_status']}")
    return {
        "seconds": r["t_answer"] - t0,
        "to_import_done": r["t_init"] - t0,
        "interpreter": r["t_start"] - t0,
        "image_query": r["t_image"] - r["t_answer"],
        "peak_rss_after_image": r["VmHWM_after_image"],
        "first_invoke": r["t_answer"] - r["t_init"],
        "peak_rss": r["VmHWM"],
        "rss": r["VmRSS"],
        "init_ms": r["init_ms"],
        "timings": r["timings"],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def baseline_once(ctx: Context, ckpt: Path, config: Path | None) -> dict[str, Any]:
    import httpx

    port = _free_port()
    env = dict(
        os.environ,
        BASELINE_MODEL=ctx.model_name,
        BASELINE_PRETRAINED=str(ckpt),
        BASELINE_THREADS=str(ctx.threads),
        PYTHONPATH=str(REPO),
    )
    if config is not None:
        env["BASELINE_MODEL_CONFIG"] = str(config)
    url = f"http://127.0.0.1:{port}/embeddings"
    t0 = time.time()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.baseline_api:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = t0 + 600
        with httpx.Client(timeout=120) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"baseline B exited ({proc.returncode}): {proc.stderr.read()[-3000:]}")
                try:
                    resp = client.post(url, json={"text": QUERY})
                except httpx.TransportError:
                    if time.time() > deadline:
                        raise RuntimeError("baseline B did not answer within 600 s") from None
                    time.sleep(0.01)
                    continue
                t1 = time.time()
                if resp.status_code != 200 or not resp.json().get("text_embeddings"):
                    raise RuntimeError(f"baseline B answered {resp.status_code}: {resp.text[:300]}")
                break
            status = _proc_status(proc.pid)
            import base64

            resp = client.post(url, json={"image": base64.b64encode(_png()).decode()})
            t2 = time.time()
            if resp.status_code != 200:
                raise RuntimeError(
                    f"baseline B answered the image with {resp.status_code}: {resp.text[:300]}"
                )
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return {
        "seconds": t1 - t0,
        "peak_rss": status.get("VmHWM"),
        "rss": status.get("VmRSS"),
        "image_query": t2 - t1,
    }


def _proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmHWM", "VmRSS"):
            out[k] = int(v.split()[0]) * 1024
    return out


def measure(
    ctx: Context, bundle: Path, index: Path, ckpt: Path, config: Path | None, repeats: int
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """``repeats`` cold starts of every variant of ours (per precision) and of baseline B, interleaved."""
    keys = [(p, v) for p in ("fp32", "int8") for v in VARIANTS]
    ours: dict[str, list[dict[str, Any]]] = {f"{p} {v}": [] for p, v in keys}
    base: list[dict[str, Any]] = []
    # warm the page cache and the bytecode caches once, untimed, so every timed repeat sees the same state
    ours_once(bundle, index, ctx, "fp32")
    ours_once(bundle, index, ctx, "int8")
    baseline_once(ctx, ckpt, config)
    for i in range(repeats):  # interleaved: load from other processes hits every variant alike
        for precision, variant in keys:
            r = ours_once(bundle, index, ctx, precision, variant)
            ours[f"{precision} {variant}"].append(r)
            ctx.log(
                f"ours {precision} {variant} #{i + 1}: {r['seconds']:.2f}s, peak {r['peak_rss'] / 2**20:.0f} "
                f"MiB, then image query {r['image_query'] * 1e3:.0f} ms"
            )
        r = baseline_once(ctx, ckpt, config)
        base.append(r)
        ctx.log(f"baseline B #{i + 1}: {r['seconds']:.2f}s, peak {r['peak_rss'] / 2**20:.0f} MiB")
    return ours, base
