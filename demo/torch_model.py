"""Loading the demo model with open_clip (torch) and wrapping it as evaluation embedders."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from PIL import Image

from demo import CHECKPOINT_PATH, CONFIG_PATH, MODEL_NAME

__all__ = ["load_model", "register_model_config", "torch_embedders"]


def register_model_config(config_path: str | Path = CONFIG_PATH) -> str:
    """Register ``demo/model/demo-clip.json`` with open_clip (idempotent); returns the model name."""
    config_path = Path(config_path)
    wanted = json.loads(config_path.read_text(encoding="utf-8"))
    if open_clip.get_model_config(config_path.stem) != wanted:
        open_clip.add_model_config(config_path)
    return config_path.stem


def load_model(
    checkpoint: str | Path | None = CHECKPOINT_PATH,
) -> tuple[torch.nn.Module, Callable[[Image.Image], torch.Tensor], Any]:
    """``(model in eval mode, inference preprocess, tokenizer)`` for the demo model.

    `checkpoint=None` gives a randomly initialised model.
    """
    register_model_config()
    model, _, preprocess = open_clip.create_model_and_transforms(
        MODEL_NAME, pretrained=str(checkpoint) if checkpoint is not None else None
    )
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(MODEL_NAME)


def torch_embedders(
    model: torch.nn.Module,
    preprocess: Callable[[Image.Image], torch.Tensor],
    tokenizer: Any,
    batch_size: int = 256,
) -> tuple[Callable[[Sequence[str]], np.ndarray], Callable[[Sequence[Image.Image]], np.ndarray]]:
    """``(embed_text, embed_image)`` returning L2-normalised float32 numpy arrays (for demo.evaluate)."""

    @torch.no_grad()
    def embed_text(texts: Sequence[str]) -> np.ndarray:
        out = [
            model.encode_text(tokenizer(list(texts[i : i + batch_size])), normalize=True)
            for i in range(0, len(texts), batch_size)
        ]
        return torch.cat(out).float().numpy()

    @torch.no_grad()
    def embed_image(images: Sequence[Image.Image]) -> np.ndarray:
        out = [
            model.encode_image(
                torch.stack([preprocess(im) for im in images[i : i + batch_size]]), normalize=True
            )
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out).float().numpy()

    return embed_text, embed_image
