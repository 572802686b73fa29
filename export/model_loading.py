"""Load an OpenCLIP model (built-in name or custom config; pretrained tag or local checkpoint) for export."""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2

from export import hf_text
from export.hub import hub_offline, reachable, weights_url
from handler.core.hashing import sha256_file

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
RANDOM_INIT = "none"  # --pretrained none: random init (tests and speed benchmarks only)
ERROR_LINES, ERROR_LINE_CHARS = 12, 400  # how much of a loading error to show

log = logging.getLogger(__name__)


class ExportError(Exception):
    """A failure the user can fix; the CLI prints the message and exits non-zero."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    name: str
    pretrained: str | None
    checkpoint: dict[str, Any] | None
    config: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    tokenizer: Any
    preprocess: Any
    device: str
    extra: dict[str, Any] = field(default_factory=dict)


def register_config(config_file: str | Path) -> str:
    """Register a custom OpenCLIP model config JSON; returns the model name (the file stem)."""
    path = Path(config_file)
    if not path.is_file():
        raise ExportError(f"--model-config {path}: file not found")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"--model-config {path}: not valid JSON ({exc})") from exc
    if (
        not isinstance(cfg, dict)
        or "vision_cfg" not in cfg
        or "text_cfg" not in cfg
        or "embed_dim" not in cfg
    ):
        raise ExportError(
            f"--model-config {path}: not an OpenCLIP model config (needs embed_dim, vision_cfg, text_cfg)"
        )
    open_clip.add_model_config(path)
    return path.stem


def check_model_name(name: str) -> None:
    known = open_clip.list_models()
    if name in known:
        return
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ExportError(
        f"unknown model {name!r}.{hint} List models with `python -c 'import open_clip; "
        "print(open_clip.list_models())'`, "
        "or pass --model-config FILE for a custom architecture."
    )


def _resolve_pretrained(name: str, pretrained: str | None) -> tuple[str | None, dict[str, Any] | None]:
    """Returns (value for open_clip, checkpoint info). Raises with guidance when weights cannot be had."""
    if pretrained is None or pretrained.lower() in (RANDOM_INIT, ""):
        return None, None
    if os.path.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt")):
        path = Path(pretrained)
        if not path.is_file():
            raise ExportError(
                f"checkpoint {pretrained!r} not found. Pass an existing local checkpoint file with "
                "--pretrained /path/to/open_clip_model.safetensors (or .pt/.bin)."
            )
        return str(path), {"file": path.name, "sha256": sha256_file(path), "size": path.stat().st_size}
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        hint = f" Known tags for {name}: {', '.join(tags)}." if tags else f" {name} has no published tags."
        raise ExportError(
            f"pretrained tag {pretrained!r} is not known for model {name!r} and is not a file.{hint} "
            "To use local weights, pass --pretrained /path/to/checkpoint."
        )
    return pretrained, None


def error_detail(exc: BaseException) -> str:
    """The useful part of a loading error: every line (torch's state_dict errors put missing/unexpected keys
    and size mismatches on the lines after a generic first one), each and their number cut to a readable
    size."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [repr(exc)]
    shown = [line if len(line) <= ERROR_LINE_CHARS else line[:ERROR_LINE_CHARS] + " ..." for line in lines]
    if len(shown) > ERROR_LINES:
        shown = [*shown[:ERROR_LINES], f"... ({len(lines) - ERROR_LINES} more lines)"]
    return "\n  ".join(shown)


#: Image preprocessing a user may set (the input size is the model's own).
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode", "fill_color")


def preprocess_override(
    name: str, preprocess: dict[str, Any] | None, preprocess_from: str | None
) -> dict[str, Any] | None:
    """Image preprocessing from a pretrained tag's config (no weights) and/or an explicit JSON object."""
    out: dict[str, Any] = {}
    if preprocess_from:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if preprocess_from not in tags:
            hint = f" Known tags: {', '.join(tags)}." if tags else f" {name} has no published tags."
            raise ExportError(
                f"--preprocess-from {preprocess_from!r}: not a pretrained tag of {name!r}.{hint}"
            )
        cfg = open_clip.get_pretrained_cfg(name, preprocess_from)
        out.update({k: cfg[k] for k in PREPROCESS_KEYS if k in cfg})
    if preprocess:
        unknown = sorted(set(preprocess) - set(PREPROCESS_KEYS))
        if unknown:
            raise ExportError(f"--preprocess: unknown keys {unknown}; allowed: {', '.join(PREPROCESS_KEYS)}")
        out.update(preprocess)
    return out or None


def _first_line(exc: BaseException) -> str:
    msg = str(exc)
    return msg.splitlines()[0] if msg else repr(exc)


def load_model(
    name: str,
    pretrained: str | None,
    *,
    model_config: str | Path | None = None,
    device: str = "cpu",
    tokenizer_dir: str | Path | None = None,
    hf_config_dir: str | Path | None = None,
    config_override: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    preprocess_from: str | None = None,
) -> LoadedModel:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ExportError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if model_config is not None:
        registered = register_config(model_config)
        if name in (None, "", DEFAULT_MODEL) or name != registered:
            log.info("using model name %r from --model-config", registered)
        name = registered
    check_model_name(name)
    pretrained_value, checkpoint = _resolve_pretrained(name, pretrained)
    force_preprocess = preprocess_override(name, preprocess, preprocess_from)
    custom_cfg = None
    if tokenizer_dir is not None or hf_config_dir is not None or config_override:
        try:
            custom_cfg = hf_text.local_overrides(
                open_clip.get_model_config(name),
                tokenizer_dir=Path(tokenizer_dir) if tokenizer_dir is not None else None,
                hf_config_dir=Path(hf_config_dir) if hf_config_dir is not None else None,
                override=config_override,
            )
        except hf_text.HfExportError as exc:
            raise ExportError(str(exc)) from exc
    text_cfg = (custom_cfg or open_clip.get_model_config(name) or {}).get("text_cfg", {})
    with hf_text.registered_config(name, custom_cfg):
        model, preprocess_fn = _create(name, pretrained_value, checkpoint, device, force_preprocess, text_cfg)
        tokenizer = _tokenizer(name, text_cfg)
        config = open_clip.get_model_config(name) or {}
    model.eval()
    preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
    return LoadedModel(
        model=model,
        name=name,
        pretrained=None if checkpoint else pretrained_value,
        checkpoint=checkpoint,
        config=config,
        preprocess_cfg=preprocess_cfg,
        tokenizer=tokenizer,
        preprocess=preprocess_fn,
        device=device,
    )


def _create(name, pretrained_value, checkpoint, device, force_preprocess, text_cfg):
    hf_model = text_cfg.get("hf_model_name")
    from_hub = checkpoint is None and pretrained_value is not None
    hub = weights_url(name, pretrained_value) if from_hub else None
    offline = hub is not None and not reachable(hub)
    if offline:
        log.warning("the model hub (%s) is unreachable; using the local cache only", hub)
    try:
        with hub_offline() if offline and open_clip.pretrained.has_hf_hub() else contextlib.nullcontext():
            # pretrained_hf=False: never download an HF text tower's base weights (an OpenCLIP checkpoint
            # holds the tower; a random-init export must stay random and offline).
            model = open_clip.create_model(
                name,
                pretrained=pretrained_value,
                device=device,
                weights_only=True,
                force_preprocess_cfg=force_preprocess,
                pretrained_hf=False,
            )
        preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    except Exception as exc:  # torch.load, open_clip and transformers raise many types
        if hf_model and _is_hf_text_failure(exc):
            raise ExportError(
                f"could not build the Hugging Face text tower {hf_model!r} of {name!r}: {_first_line(exc)}. "
                "Its config comes from the model hub, which may be unreachable here; save it elsewhere "
                "(transformers AutoConfig.save_pretrained) and pass --hf-config DIR."
            ) from exc
        if from_hub:
            where = (
                f"the model hub ({hub}) is unreachable from here and the weights are not in the local cache"
                if offline
                else "weights are downloaded from the model hub"
            )
            raise ExportError(
                f"could not load pretrained weights {pretrained_value!r} for {name!r}: {where}. Download the "
                "checkpoint elsewhere and pass it with --pretrained /path/to/checkpoint.\n  "
                + error_detail(exc)
            ) from exc
        if pretrained_value is None:
            raise ExportError(
                f"could not build model {name!r} with random init:\n  {error_detail(exc)}"
            ) from exc
        raise ExportError(
            f"could not load checkpoint {pretrained_value!r} into {name!r}; check that the checkpoint "
            f"matches the architecture (--model / --model-config):\n  {error_detail(exc)}"
        ) from exc
    return model, preprocess


def _is_hf_text_failure(error: BaseException) -> bool:
    """Whether an exception came from transformers (config / model download or construction)."""
    exc: BaseException | None = error
    while exc is not None:
        tb = exc.__traceback__
        while tb is not None:
            if "/transformers/" in tb.tb_frame.f_code.co_filename.replace("\\", "/"):
                return True
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return False


def _tokenizer(name: str, text_cfg: dict[str, Any]):
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as exc:  # transformers / hub / sentencepiece errors
        source = text_cfg.get("hf_tokenizer_name") or name
        raise ExportError(
            f"could not load the tokenizer {source!r} of {name!r}: {_first_line(exc)}. "
            "Hugging Face tokenizers come from the model hub, which may be unreachable here; save it "
            "elsewhere (AutoTokenizer.save_pretrained) and pass --tokenizer DIR."
        ) from exc
    if not isinstance(tokenizer, (open_clip.tokenizer.SimpleTokenizer, open_clip.tokenizer.HFTokenizer)):
        raise ExportError(
            f"model {name!r} uses tokenizer {type(tokenizer).__name__}; the torch-free runtime supports the "
            "CLIP BPE tokenizer and Hugging Face tokenizers (HFTokenizer)"
        )
    return tokenizer
