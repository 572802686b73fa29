"""Coverage table of OpenCLIP families: export (random init) -> parity -> torch-free runtime -> token ids.

    python scripts/models_table.py --out docs/models.md            # every row, shrunk towers (default)
    python scripts/models_table.py --only siglip,nllb --no-shrink  # real sizes

Each row exports one config of a family with random init into a temp directory and records: export ok,
parity (max-abs text / image vs PyTorch), runtime ok (handler.core.runtime, no torch), token-id equality of
the runtime tokenizer with open_clip's on a fixed multilingual text set, bundle size, encode latency (one
text, one image, median of 5). Hugging Face tokenizers and text configs are built offline
(tests/hf_fixtures.py: a tokenizer of the family's kind trained on a small corpus), never downloaded: the
table checks that the pipeline reproduces open_clip for the family's tokenizer type and tower, not the
published vocabularies. With --shrink (default) towers are cut to a few layers / small widths
(--config-override) so the table runs on a laptop; timm vision towers are replaced by a tiny native ViT.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# row -> (open_clip model, tokenizer fixture kind or None for CLIP BPE, HF text model type, preprocess tag)
# Families that differ in the vision tower (CLIP BPE text) run at their real, smallest size (VISION_ROWS).
VISION_ROWS = {
    "modified resnet": ("RN50", None, None, "openai"),
    "quickgelu": ("ViT-B-32-quickgelu", None, None, "openai"),
    "convnext": ("convnext_tiny", None, None, None),
    "eva02": ("EVA02-B-16", None, None, "merged2b_s8b_b131k"),
    "vitamin": ("ViTamin-S", None, None, "datacomp1b"),
    "pe-core": ("PE-Core-T-16-384", None, None, "meta"),
    "coca": ("coca_ViT-B-32", None, None, "laion2b_s13b_b90k"),
    "mobileclip2": ("MobileCLIP2-S0", None, None, "dfndr2b"),
    "timm vit": ("vit_medium_patch16_gap_256", None, None, None),
    "swin": ("swin_base_patch4_window7_224", None, None, None),
}
ROWS = {
    "clip (ViT)": ("ViT-B-32", None, None, None),
    "mobileclip": ("MobileCLIP-S1", None, None, "datacompdr"),
    "siglip": ("ViT-B-16-SigLIP", "unigram_t5", None, "webli"),
    "siglip-i18n": ("ViT-B-16-SigLIP-i18n-256", "unigram_t5", None, "webli"),
    "siglip2": ("ViT-B-16-SigLIP2", "unigram_gemma", None, "webli"),
    "clipa": ("ViT-L-14-CLIPA", "wordpiece", None, "datacomp1b"),
    "metaclip2 worldwide": ("ViT-H-14-worldwide", "unigram_xlmr", None, None),
    "xlm-roberta": ("xlm-roberta-base-ViT-B-32", "unigram_xlmr", "xlm-roberta", None),
    "roberta": ("roberta-ViT-B-32", "unigram_xlmr", "roberta", None),
    "mt5": ("mt5-base-ViT-B-32", "unigram_gemma", "mt5", None),
    "nllb": ("nllb-clip-base", "nllb", "m2m_100", None),
    **VISION_ROWS,
}
#: CI subset: one row per tokenizer type.
CI_ROWS = ("clip (ViT)", "siglip")


def token_texts() -> list[str]:
    from tests.hf_fixtures import MULTILINGUAL

    return ["", *MULTILINGUAL, " ".join(MULTILINGUAL) * 3, "🐱" * 100]


def export_row(name: str, work: Path, shrink: bool) -> tuple[Path, list[str]]:
    from transformers import AutoTokenizer

    from tests.bundle_fixtures import TINY_TEXT, TINY_VISION, export_bundle
    from tests.hf_fixtures import save_text_config, save_tokenizer

    model, kind, hf_type, tag = ROWS[name]
    shrink = shrink and name not in VISION_ROWS
    args = ["--model", model, "--pretrained", "none"]
    override: dict = {"embed_dim": 32, "vision_cfg": TINY_VISION} if shrink else {}
    if kind:
        tok_dir = save_tokenizer(kind, work / "tokenizer")
        tok = AutoTokenizer.from_pretrained(str(tok_dir))
        args += ["--tokenizer", str(tok_dir)]
        if hf_type:
            width = TINY_TEXT if shrink else {}
            cfg = save_text_config(
                hf_type,
                work / "hf-config",
                vocab_size=len(tok),
                pad_token_id=tok.pad_token_id,
                context_length=77,
                **width,
            )
            args += ["--hf-config", str(cfg)]
        else:
            override.setdefault("text_cfg", {})["vocab_size"] = len(tok)
    if shrink and not hf_type:
        override.setdefault("text_cfg", {}).update(TINY_TEXT)
    if tag:
        args += ["--preprocess-from", tag]
    if override:
        args += ["--config-override", json.dumps(override)]
    return export_bundle(work / "bundle", *args), args


def measure(name: str, shrink: bool) -> dict:
    import numpy as np
    import open_clip
    from PIL import Image

    from handler.core.runtime import load_bundle

    row = {"family": name, "model": ROWS[name][0], "export": "fail"}
    work = Path(tempfile.mkdtemp(prefix="models-table-"))
    try:
        bundle, args = export_row(name, work, shrink)
        manifest = json.loads((bundle / "manifest.json").read_text())
        row.update(
            export="ok",
            tokenizer=manifest["text"]["tokenizer"]["type"],
            text_max_abs=manifest["parity"]["text_max_abs"],
            image_max_abs=manifest["parity"]["image_max_abs"],
            parity="ok" if manifest["parity"]["passed"] else "fail",
            size_mb=sum(f.stat().st_size for f in bundle.iterdir()) / 2**20,
        )
        emb = load_bundle(bundle)
        texts = token_texts()
        cfg = dict(open_clip.get_model_config(row["model"]))
        ref = _reference_tokenizer(row["model"], args, cfg)
        row["token_ids"] = "equal" if (emb.tokenize(texts) == ref(texts).numpy()).all() else "DIFFER"
        img = Image.new("RGB", (320, 240), (200, 30, 30))
        t_text, t_img = [], []
        for i in range(6):
            t0 = time.perf_counter()
            emb.embed_texts([f"a photo of a cat {i}"])
            t1 = time.perf_counter()
            emb.embed_images([img])
            t2 = time.perf_counter()
            if i:
                t_text.append(t1 - t0)
                t_img.append(t2 - t1)
        row.update(
            runtime="ok", text_ms=1000 * statistics.median(t_text), image_ms=1000 * statistics.median(t_img)
        )
        assert np.isfinite(emb.embed_texts(texts)).all()
    except Exception as exc:  # a row that fails is reported, not fatal
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:160]
        traceback.print_exc(file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return row


def _reference_tokenizer(model: str, args: list[str], cfg: dict):
    """open_clip's own tokenizer for the row, built the way the exporter did (local tokenizer dir)."""
    import open_clip

    if "--tokenizer" not in args:
        return open_clip.get_tokenizer(model)
    text_cfg = cfg["text_cfg"]
    kwargs = dict(text_cfg.get("tokenizer_kwargs", {}))
    return open_clip.tokenizer.HFTokenizer(
        args[args.index("--tokenizer") + 1], context_length=text_cfg.get("context_length", 77), **kwargs
    )


def markdown(rows: list[dict], command: str, shrink: bool, note: str | None = None) -> str:
    def f(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    lines = [
        "# Model coverage",
        "",
        "Generated by `scripts/models_table.py` (`make models-table`); do not edit by hand. Command:",
        "",
        f"    {command}",
        "",
        "Random init, one config per family, "
        + (
            "towers shrunk (tiny text tower, tiny native ViT vision tower; "
            "real tokenizer type, text-tower architecture and pooling) "
            "except the vision families (modified resnet ... swin), which "
            "run at their real size"
            if shrink
            else "real sizes"
        )
        + ". "
        "Image preprocessing: the named tag's (no weights), else OpenAI's. "
        "Hugging Face tokenizers/configs are trained/built offline in the family's style "
        "(tests/hf_fixtures.py). "
        "Token ids: the runtime tokenizer (no torch) vs open_clip's on a fixed multilingual set (empty, 16 "
        "languages, emoji, over-long). Latency: median of 5 single-item encodes on this machine (CPU).",
        *(["", note] if note else []),
        "",
        "| family | model config | tokenizer | export | parity text / image (max abs) | runtime | "
        "token ids | bundle MB | text ms | image ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        parity = f"{f(r.get('text_max_abs'), '.1e')} / {f(r.get('image_max_abs'), '.1e')}"
        lines.append(
            f"| {r['family']} | {r['model']} | {r.get('tokenizer', '-')} | {r['export']} | {parity} | "
            f"{r.get('runtime', 'fail')} | {r.get('token_ids', '-')} | {f(r.get('size_mb'), '.1f')} | "
            f"{f(r.get('text_ms'), '.1f')} | {f(r.get('image_ms'), '.1f')} |"
        )
    errors = [r for r in rows if r.get("error")]
    if errors:
        lines += ["", "Errors:", ""] + [f"- {r['family']}: `{r['error']}`" for r in errors]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help=f"comma-separated rows (default all): {', '.join(ROWS)}; 'ci' = {CI_ROWS}")
    p.add_argument("--no-shrink", action="store_true", help="real tower sizes (slow, large)")
    p.add_argument("--out", type=Path, help="write the markdown table here (default: print it)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    p.add_argument("--note", help="a line added under the description (for example about the machine)")
    args = p.parse_args(argv)
    names = list(ROWS) if not args.only else CI_ROWS if args.only == "ci" else args.only.split(",")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        print(f"error: unknown rows {unknown}; choose from {', '.join(ROWS)}", file=sys.stderr)
        return 2
    import logging

    logging.disable(logging.WARNING)
    rows = []
    for n in names:
        print(f"[models-table] {n} ...", file=sys.stderr, flush=True)
        rows.append(measure(n, not args.no_shrink))
    command = "python scripts/models_table.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:])
    )
    text = markdown(rows, command.strip(), not args.no_shrink, args.note)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    ok = all(
        r["export"] == "ok"
        and r.get("parity") == "ok"
        and r.get("runtime") == "ok"
        and r.get("token_ids") == "equal"
        for r in rows
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
