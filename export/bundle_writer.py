"""Write a self-describing model bundle: export, verify parity, checksum, then move into place atomically."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import open_clip

from export import hf_text, onnx_export, parity
from export.attention import variable_length_problem
from export.manifest_sections import image_section, tokenizer_section
from export.model_loading import ExportError, LoadedModel
from handler.core import __version__
from handler.core.bundle import IO, KIND, MANIFEST, SCHEMA_VERSION, file_entry, fingerprint, onnx_filename
from handler.core.tokenizer_factory import CLIP_BPE, tokenizer_files, tokenizer_type

log = logging.getLogger(__name__)


def _versions() -> dict[str, str]:
    out = {}
    for dist, key in (
        ("torch", "torch"),
        ("open_clip_torch", "open_clip"),
        ("onnx", "onnx"),
        ("onnxruntime", "onnxruntime"),
    ):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = "unknown"
    return out


def prepare_output(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        what = "a bundle" if (out / MANIFEST).exists() else "a non-empty directory"
        raise ExportError(f"--out {out}: {what} already exists; pass --force to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"--out {out}: cannot create parent directory {parent} ({exc.strerror})") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"--out {out}: directory {parent} is not writable; choose another --out")


def _publish(tmp: Path, out: Path) -> None:
    """Replace `out` with the finished `tmp` directory; the old bundle is removed only after the swap."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_bundle(
    loaded: LoadedModel,
    out: Path,
    *,
    precisions: list[str],
    opset: int,
    force: bool,
    variable_length: bool = True,
) -> dict[str, Any]:
    out = Path(out)
    prepare_output(out, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        manifest = _build(loaded, tmp, precisions=precisions, opset=opset, variable_length=variable_length)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _build(
    loaded: LoadedModel, tmp: Path, *, precisions: list[str], opset: int, variable_length: bool = True
) -> dict[str, Any]:
    text = tokenizer_section(loaded, tmp)
    image = image_section(loaded)
    # Variable-length text (the runtime drops the padding after the EOT token) wherever that is exact.
    problem = (
        variable_length_problem(loaded.model) if variable_length else "exported with --fixed-length-text"
    )
    text["variable_length"] = problem is None
    if problem is not None:
        text["variable_length_reason"] = problem
        log.info("text graph: fixed length %d (%s)", text["context_length"], problem)
    log.info("exporting %s (fp32, opset %d)", loaded.name, opset)
    try:
        example = hf_text.example_ids(loaded.tokenizer)
    except Exception as exc:  # tokenizer libraries raise many types
        raise ExportError(f"the tokenizer of {loaded.name!r} failed on example text: {exc}") from exc
    fp32 = onnx_export.export_towers(
        loaded.model,
        example,
        image["size"],
        tmp,
        opset=opset,
        device=loaded.device,
        variable_length=text["variable_length"],
    )
    if tokenizer_type(text) == CLIP_BPE:
        shutil.copyfile(open_clip.tokenizer.default_bpe(), tmp / text["tokenizer"]["vocab_file"])

    log.info("measuring PyTorch vs ONNX parity")
    parity_result = parity.measure_parity(
        loaded,
        fp32,
        trim_padding=text["variable_length"],
        pad_id=int(text["tokenizer"].get("pad_token_id") or 0),
    )
    if not parity_result["passed"]:
        raise ExportError(
            f"parity check failed: max-abs text {parity_result['text_max_abs']:.2e}, image "
            f"{parity_result['image_max_abs']:.2e} (limit {parity.FP32_MAX_ABS:.0e}), trimmed vs untrimmed "
            f"text {parity_result.get('trimmed_vs_untrimmed_max_abs', 0.0):.2e} (limit "
            f"{parity.TRIM_MAX_ABS:.0e}); the ONNX graph does not reproduce the PyTorch model (try another "
            "--opset, or --fixed-length-text)"
        )

    files: dict[str, Any] = {}
    variants: dict[str, dict[str, Any]] = {}
    for precision in precisions:
        names = {tower: onnx_filename(tower, precision) for tower in ("textual", "visual")}
        data = {
            tower: onnx_export.external_data_name(name)
            for tower, name in names.items()
            if (tmp / onnx_export.external_data_name(name)).exists()
        }
        accuracy = None
        if precision != "fp32":
            convert = onnx_export.to_fp16 if precision == "fp16" else onnx_export.to_int8
            paths = {tower: tmp / name for tower, name in names.items()}
            for tower in paths:
                convert(fp32[tower], paths[tower])
            accuracy = parity.measure_variant(loaded, fp32, paths, precision)
            if not accuracy["passed"]:
                raise ExportError(
                    f"{precision} variant is too far from fp32: {json.dumps(accuracy)}; "
                    f"thresholds {parity.VARIANT_THRESHOLDS[precision]}"
                )
        for name in [*names.values(), *data.values()]:
            files[name] = file_entry(tmp / name)
        variants[precision] = {
            **names,
            **({"external_data": data} if data else {}),
            "fingerprint": fingerprint({n: files[n]["sha256"] for n in [*names.values(), *data.values()]}),
            "accuracy": accuracy,
        }
    for name in tokenizer_files(text):
        files[name] = file_entry(tmp / name)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "model": {
            "name": loaded.name,
            "pretrained": loaded.pretrained,
            "checkpoint": loaded.checkpoint,
            "random_init": loaded.pretrained is None and loaded.checkpoint is None,
            "config": loaded.config,
        },
        "model_fingerprint": variants["fp32"]["fingerprint"],
        "embed_dim": int(loaded.config["embed_dim"]),
        "text": text,
        "image": image,
        "precisions": variants,
        "io": IO,
        "opset": opset,
        "files": files,
        "parity": parity_result,
        "versions": _versions(),
        "created_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "exporter": f"export {__version__}",
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest
