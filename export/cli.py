"""`python -m export`: OpenCLIP model -> verified ONNX model bundle."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from handler.core.bundle import PRECISIONS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export",
        description=(
            "Convert an OpenCLIP model's text and vision towers to ONNX and write a verified model bundle."
        ),
    )
    p.add_argument(
        "--model",
        default=os.environ.get("MODEL_NAME") or "ViT-B-32",
        help="OpenCLIP model name (env MODEL_NAME; default ViT-B-32)",
    )
    p.add_argument(
        "--pretrained",
        default=os.environ.get("MODEL_PRETRAINED") or "laion2b_s34b_b79k",
        help="pretrained tag, a local checkpoint path, or 'none' for random init "
        "(env MODEL_PRETRAINED; default laion2b_s34b_b79k)",
    )
    p.add_argument(
        "--model-config",
        type=Path,
        help="OpenCLIP model config JSON for a custom architecture (the model name becomes the file's stem)",
    )
    p.add_argument(
        "--tokenizer",
        type=Path,
        metavar="DIR",
        help="local Hugging Face tokenizer directory (AutoTokenizer.save_pretrained) used instead of the "
        "config's hf_tokenizer_name hub id (offline export)",
    )
    p.add_argument(
        "--hf-config",
        type=Path,
        metavar="DIR",
        help="local Hugging Face text-model config directory (config.json) used instead of the "
        "config's hf_model_name hub id (offline export)",
    )
    p.add_argument(
        "--config-override",
        metavar="JSON",
        help="JSON object (inline or a file) deep-merged into the model config, e.g. "
        '\'{"text_cfg": {"layers": 2}}\'',
    )
    p.add_argument(
        "--preprocess",
        metavar="JSON",
        help="image preprocessing (inline JSON or a file): size, mean, std, interpolation, "
        "resize_mode, fill_color",
    )
    p.add_argument(
        "--preprocess-from",
        metavar="TAG",
        help="take the image preprocessing of this pretrained tag (no weights are loaded)",
    )
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument(
        "--precision",
        nargs="+",
        default=["fp32"],
        choices=PRECISIONS,
        help="precision variants to write (fp32 is always included)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (PyTorch side of export and parity)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument(
        "--fixed-length-text",
        action="store_true",
        help="always run the text graph at context_length, even for a causal tower pooled at EOT "
        "(whose padding the runtime otherwise trims; for comparisons)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("export").setLevel(logging.WARNING if args.quiet else logging.INFO)
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    if not args.device.startswith(("cpu", "cuda")):
        print(f"error: --device {args.device!r}: use cpu or cuda", file=sys.stderr)
        return 2
    if not 13 <= args.opset <= 21:
        print(f"error: --opset {args.opset}: choose an opset between 13 and 21", file=sys.stderr)
        return 2
    precisions = ["fp32"] + [p for p in dict.fromkeys(args.precision) if p != "fp32"]

    # Heavy imports only after argument validation, so `--help` and usage errors are instant.
    from export.bundle_writer import write_bundle
    from export.hf_text import HfExportError, parse_json_arg
    from export.model_loading import ExportError, load_model

    started = time.perf_counter()
    try:
        try:
            override = parse_json_arg(args.config_override, "--config-override")
            preprocess = parse_json_arg(args.preprocess, "--preprocess")
        except HfExportError as exc:
            raise ExportError(str(exc)) from exc
        loaded = load_model(
            args.model,
            args.pretrained,
            model_config=args.model_config,
            device=args.device,
            tokenizer_dir=args.tokenizer,
            hf_config_dir=args.hf_config,
            config_override=override,
            preprocess=preprocess,
            preprocess_from=args.preprocess_from,
        )
        manifest = write_bundle(
            loaded,
            args.out,
            precisions=precisions,
            opset=args.opset,
            force=args.force,
            variable_length=not args.fixed_length_text,
        )
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: no bundle was written", file=sys.stderr)
        return 130
    summary = {
        "bundle": str(args.out),
        "model": manifest["model"]["name"],
        "model_fingerprint": manifest["model_fingerprint"],
        "embed_dim": manifest["embed_dim"],
        "parity": {
            k: manifest["parity"][k] for k in ("text_max_abs", "image_max_abs", "threshold", "passed")
        },
        "text_variable_length": manifest["text"]["variable_length"],
        "precisions": {p: v["accuracy"] for p, v in manifest["precisions"].items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary, indent=2))
    return 0
