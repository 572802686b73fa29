"""Footprint: installed size of the handler's dependency set vs the torch stack, and bundle sizes.

Dependency sizes come from ``scripts.footprint.deploy_footprint()`` (the deployment's own measure: RECORD
files of each distribution in the dependency closure, in this .venv).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import Context, DemoUnavailable, Goal, Section, demo_bundle, export_bundle, mib, table

GOAL_RATIO = 0.1
CUDA_PREFIXES = ("nvidia-", "cuda-", "triton")


def _deploy_footprint() -> tuple[dict[str, Any], str]:
    try:
        from scripts.footprint import deploy_footprint
    except ImportError as exc:  # pragma: no cover - the deployment script is part of the repo
        raise RuntimeError(f"scripts/footprint.py is not importable ({exc})") from exc
    return deploy_footprint(), "scripts.footprint.deploy_footprint()"


def bundle_sizes(bundle: Path) -> dict[str, dict[str, int]]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = manifest["files"]
    vocab = manifest["text"]["tokenizer"]["vocab_file"]
    out = {}
    for precision, entry in manifest["precisions"].items():
        t, v = files[entry["textual"]]["size"], files[entry["visual"]]["size"]
        out[precision] = {
            "textual": t,
            "visual": v,
            "total": t + v + files[vocab]["size"] + len(json.dumps(manifest)),
        }
    return out


def run(ctx: Context) -> Section:
    sec = Section("footprint", "Footprint — installed dependencies and bundle sizes")
    fp, method = _deploy_footprint()
    handler_b, torch_b = fp["handler_deps_bytes"], fp["torch_stack_bytes"]
    torch_pk = fp["torch_stack_packages"]
    cuda_b = sum(v for k, v in torch_pk.items() if k.startswith(CUDA_PREFIXES))
    no_cuda = torch_b - cuda_b
    top_h = sorted(fp["handler_packages"].items(), key=lambda kv: -kv[1])[:6]
    top_t = sorted(torch_pk.items(), key=lambda kv: -kv[1])[:6]
    sec.add(
        f"Measured with `{method}` in this virtual environment ({fp['method']}).",
        table(
            ["Dependency set", "installed size", "packages", "vs handler set", "largest"],
            [
                [
                    "handler (requirements/handler.txt closure)",
                    mib(handler_b),
                    len(fp["handler_packages"]),
                    "1.00x",
                    ", ".join(f"{k} {mib(v)}" for k, v in top_h),
                ],
                [
                    "torch stack (torch, torchvision, open_clip_torch closure)",
                    mib(torch_b),
                    len(torch_pk),
                    f"{torch_b / handler_b:.1f}x",
                    ", ".join(f"{k} {mib(v)}" for k, v in top_t),
                ],
                [
                    "torch stack without the NVIDIA/CUDA/triton packages",
                    mib(no_cuda),
                    sum(1 for k in torch_pk if not k.startswith(CUDA_PREFIXES)),
                    f"{no_cuda / handler_b:.1f}x",
                    "conservative: the torch package installed here is still the CUDA build",
                ],
            ],
            align="lrrrl",
        ),
    )
    if fp.get("missing"):
        sec.add(f"Not installed here (not counted): {', '.join(fp['missing'])}.")
    rows = []
    sizes: dict[str, Any] = {}
    bundles = [
        ("ViT-B-32 (random init)" if not ctx.quick else f"{ctx.model_name} (quick)", export_bundle(ctx))
    ]
    try:
        dpath, trained = demo_bundle(ctx)
        bundles.append(("demo model" + ("" if trained else " (random init)"), dpath))
    except DemoUnavailable as exc:
        sec.add(f"**Demo model bundle skipped:** {exc}")
    for label, path in bundles:
        s = bundle_sizes(path)
        sizes[label] = s
        for precision, e in s.items():
            rows.append(
                [
                    label,
                    precision,
                    mib(e["textual"]),
                    mib(e["visual"]),
                    mib(e["total"]),
                    f"{e['total'] / s['fp32']['total']:.2f}",
                ]
            )
    sec.add(
        "### Bundle size per precision (what MODEL_URI holds for one precision: both towers, vocabulary, "
        "manifest)",
        table(["Model", "precision", "textual", "visual", "total", "vs fp32"], rows, align="llrrrr"),
        "int8: dynamic quantization of the MatMul/Gemm weights, and 8-bit storage of the text tower's token "
        "embedding table (49408 × width; Gather), which is most of a small text tower.",
    )
    ratio = handler_b / torch_b
    sec.goals.append(
        Goal(
            "Handler dependencies vs torch stack",
            f"≤ {GOAL_RATIO:g} of the torch stack",
            f"{ratio:.3f} ({mib(handler_b)} vs {mib(torch_b)}); {handler_b / no_cuda:.3f} vs the "
            "stack without CUDA packages",
            ratio <= GOAL_RATIO,
            "" if ratio <= GOAL_RATIO else "see the package list",
        )
    )
    sec.data.update(
        {
            "deploy_footprint": {k: v for k, v in fp.items()},
            "bundles": sizes,
            "torch_stack_without_cuda": no_cuda,
        }
    )
    return sec
