"""Hugging Face tokenizers and text towers for export: local overrides, the manifest section, example ids.

open_clip names HF tokenizers / text models by hub id (`text_cfg.hf_tokenizer_name` / `hf_model_name`);
`--tokenizer DIR` / `--hf-config DIR` point those at local directories (offline export), and
`--config-override JSON` deep-merges into the model config (for example to shrink a tower for tests).
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import open_clip

from handler.core.tokenizer_factory import HF_TOKENIZERS

TOKENIZER_FILE = "tokenizer.json"


class HfExportError(Exception):
    """Raised for unusable HF tokenizer / text-model input (wrapped into ExportError by the caller)."""


def parse_json_arg(value: str | Path | None, flag: str) -> dict[str, Any] | None:
    """A JSON object given inline or as a file path."""
    if value is None:
        return None
    text = str(value)
    try:
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text()
        obj = json.loads(text)
    except OSError as exc:
        raise HfExportError(f"{flag} {value}: cannot read ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise HfExportError(f"{flag}: not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise HfExportError(f"{flag}: expected a JSON object")
    return obj


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` merged into a copy of `base`; a null value removes the key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def local_overrides(
    cfg: dict[str, Any],
    *,
    tokenizer_dir: Path | None,
    hf_config_dir: Path | None,
    override: dict[str, Any] | None,
) -> dict[str, Any]:
    """The model config with --config-override merged and the HF names pointed at local directories."""
    cfg = deep_merge(cfg, override or {})
    text_cfg = cfg.setdefault("text_cfg", {})
    if tokenizer_dir is not None:
        if not Path(tokenizer_dir).is_dir():
            raise HfExportError(
                f"--tokenizer {tokenizer_dir}: not a directory (expected a saved HF tokenizer)"
            )
        if not text_cfg.get("hf_tokenizer_name"):
            raise HfExportError("--tokenizer: this model uses the CLIP BPE tokenizer, not a Hugging Face one")
        text_cfg["hf_tokenizer_name"] = str(Path(tokenizer_dir).resolve())
    if hf_config_dir is not None:
        if not (Path(hf_config_dir) / "config.json").is_file():
            raise HfExportError(
                f"--hf-config {hf_config_dir}: no config.json there (expected a saved HF config)"
            )
        if not text_cfg.get("hf_model_name"):
            raise HfExportError("--hf-config: this model's text tower is not a Hugging Face model")
        text_cfg["hf_model_name"] = str(Path(hf_config_dir).resolve())
    return cfg


@contextlib.contextmanager
def registered_config(name: str, cfg: dict[str, Any] | None) -> Iterator[None]:
    """Make open_clip see `cfg` under `name` for the duration (restores the built-in config afterwards)."""
    if cfg is None:
        yield
        return
    configs = open_clip.factory._MODEL_CONFIGS
    missing = object()
    old = configs.get(name, missing)
    configs[name] = cfg
    try:
        yield
    finally:
        configs = open_clip.factory._MODEL_CONFIGS
        if old is missing:
            configs.pop(name, None)
        else:
            configs[name] = old


def is_hf_tokenizer(tokenizer: Any) -> bool:
    return isinstance(tokenizer, open_clip.tokenizer.HFTokenizer)


def hf_tokenizer_section(tokenizer: Any, out_dir: Path | None = None) -> dict[str, Any]:
    """Manifest `text` section for an open_clip HFTokenizer; writes tokenizer.json into out_dir."""
    if getattr(tokenizer, "tokenizer_mode", "") not in ("", None):
        raise HfExportError(f"tokenizer_mode {tokenizer.tokenizer_mode!r} is not supported by the runtime")
    hf = tokenizer.tokenizer
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise HfExportError(
            f"tokenizer {type(hf).__name__} has no fast (Rust) backend to save as {TOKENIZER_FILE}"
        )
    if hf.pad_token_id is None:
        raise HfExportError("the tokenizer has no pad token; open_clip pads to the context length with it")
    clean = next(m for m in ("canonicalize", "whitespace", "lower") if m in tokenizer.clean_fn.__name__)
    section: dict[str, Any] = {
        "type": HF_TOKENIZERS,
        "file": TOKENIZER_FILE,
        "clean": clean,
        "pad_token_id": int(hf.pad_token_id),
        "pad_token": str(hf.pad_token),
        "pad_type_id": int(getattr(hf, "pad_token_type_id", 0) or 0),
        "padding_side": hf.padding_side,
        "truncation_side": hf.truncation_side,
        "strip_sep_token": bool(tokenizer.strip_sep_token),
        "sep_token_id": None if hf.sep_token_id is None else int(hf.sep_token_id),
        "language": _language_section(tokenizer),
        "hf_class": type(hf).__name__,
    }
    if out_dir is not None:
        tok = backend.__class__.from_str(backend.to_str())
        tok.no_truncation()
        tok.no_padding()
        tok.save(str(out_dir / TOKENIZER_FILE))
    return {"context_length": int(tokenizer.context_length), "vocab_size": len(hf), "tokenizer": section}


def _language_section(tokenizer: Any) -> dict[str, Any] | None:
    """NLLB-style source-language templates (`set_src_lang_special_tokens`), as data for the runtime."""
    hf = tokenizer.tokenizer
    if not callable(getattr(hf, "set_src_lang_special_tokens", None)):
        return None
    codes = [t for t in getattr(hf, "additional_special_tokens", None) or [] if "_" in t]
    codes += [c for c in getattr(hf, "_extra_special_tokens", None) or [] if isinstance(c, str) and "_" in c]
    codes = list(dict.fromkeys(codes))
    if not codes:
        raise HfExportError(f"{type(hf).__name__} has set_src_lang_special_tokens but no language codes")
    return {
        "default": getattr(hf, "src_lang", None),
        "legacy": bool(getattr(hf, "legacy_behaviour", False)),
        "eos_token": str(hf.eos_token),
        "eos_token_id": int(hf.eos_token_id),
        "codes": {c: int(hf.convert_tokens_to_ids(c)) for c in codes},
    }


def example_ids(tokenizer: Any, n: int = 2):
    """Tracing input: real token ids from the model's own tokenizer (any vocabulary size)."""
    return tokenizer(["a photo of a cat", ""][:n])
