"""Where our cold start goes: each piece timed alone (interpreter, imports, checksums, text session,
tokenizer, index) and the heaviest imports from ``python -X importtime``."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, Context

BREAKDOWN = r"""
import time
t0 = time.perf_counter()
import handler.lambda_function  # noqa: F401  (MODEL_URI unset: imports only, the load fails fast)
# what loading the bundle and index imports
import handler.core.runtime, handler.core.index, hnswlib  # noqa: E401,F401
print(time.perf_counter() - t0)
"""


def breakdown(bundle: Path, index: Path, ctx: Context) -> dict[str, Any]:
    """The pieces of our cold start, each timed alone: imports, checksums, text session, tokenizer, index."""
    from handler.core.bundle import read_manifest, sha256_file
    from handler.core.encoders import create_session
    from handler.core.index import load_index
    from handler.core.tokenizer import ClipTokenizer

    repeats = 1 if ctx.quick else 3
    b = read_manifest(bundle)
    text_path = b.onnx_path("textual", "fp32")
    vocab = bundle / b.manifest["text"]["tokenizer"]["vocab_file"]
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_URI", "INDEX_URI")}
    env.update(PYTHONPATH=str(REPO), LOG_LEVEL="CRITICAL")
    steps: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        steps.setdefault(name, []).append(seconds)

    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
        add("python interpreter start (`python -c pass`)", time.perf_counter() - t0)
        out = subprocess.run(
            [sys.executable, "-c", BREAKDOWN], env=env, cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
        add(
            "imports: handler.lambda_function + what loading imports "
            "(fastapi, numpy, onnxruntime, hnswlib, ...)",
            float(out[-1]),
        )
        t0 = time.perf_counter()
        sha256_file(text_path)
        sha256_file(vocab)
        add(
            f"sha256 of textual.onnx ({text_path.stat().st_size / 2**20:.0f} MiB) + vocabulary (verify=True)",
            time.perf_counter() - t0,
        )
        t0 = time.perf_counter()
        ClipTokenizer.from_manifest(bundle, b.manifest["text"])
        add("tokenizer (BPE merges)", time.perf_counter() - t0)
        t0 = time.perf_counter()
        create_session(text_path, "fp32", ctx.threads)
        add("onnxruntime session for textual.onnx (fp32)", time.perf_counter() - t0)
        t0 = time.perf_counter()
        load_index(str(index))
        add("index (300 vectors): pointer, manifest, checksums, hnswlib load", time.perf_counter() - t0)
    return {
        "repeats": repeats,
        "steps": {k: statistics.median(v) for k, v in steps.items()},
        "imports": import_times(env),
    }


def import_times(env: dict[str, str], top: int = 8) -> dict[str, float]:
    """Cumulative import time (s) of the heaviest top-level packages `import handler.lambda_function` pulls
    in, from `python -X importtime` (which itself adds some overhead)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", BREAKDOWN],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    totals: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [p.strip() for p in line[len("import time:") :].split("|")]
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        name = parts[2]
        if name.startswith(" ") or "." in name.strip():
            continue  # nested imports are inside their parent's cumulative time
        pkg = name.strip()
        totals[pkg] = max(totals.get(pkg, 0.0), int(parts[1]) / 1e6)
    return dict(sorted(totals.items(), key=lambda kv: -kv[1])[:top])
