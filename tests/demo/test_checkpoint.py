"""The committed demo checkpoint really works: retrieval on freshly generated held-out shapes (torch)."""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image

from demo import CHECKPOINT_PATH, CONFIG_PATH, MODEL_NAME
from demo.evaluate import evaluate
from demo.shapes import CLASSES, sample
from demo.torch_model import load_model, torch_embedders

# Never used by demo.train (training draws from --seed 0 streams, its report uses 1_000_003/4).
HELDOUT_SEED = 424_242
PER_CLASS = 8


@pytest.fixture(scope="module")
def embedders():
    torch.set_num_threads(2)
    model, preprocess, tokenizer = load_model(CHECKPOINT_PATH)
    return torch_embedders(model, preprocess, tokenizer)


def test_checkpoint_is_small_and_config_is_registered() -> None:
    assert CHECKPOINT_PATH.is_file()
    assert CHECKPOINT_PATH.stat().st_size < 10 * 1024 * 1024
    cfg = json.loads(CONFIG_PATH.read_text())
    assert MODEL_NAME == "demo-clip"
    assert cfg["text_cfg"]["vocab_size"] == 49408
    assert cfg["vision_cfg"]["image_size"] == 64


def _check(res: dict) -> None:
    assert res["text_to_image_precision_at_1"] == 1.0, res["text_to_image_misses"]
    assert res["zero_shot_accuracy"] >= 0.95, res
    assert res["image_query_precision_at_5"] >= 0.8, res


def test_heldout_retrieval_64px(embedders) -> None:
    embed_text, embed_image = embedders
    items = sample(PER_CLASS * len(CLASSES), seed=HELDOUT_SEED, size=64)
    res = evaluate(embed_text, embed_image, [i for i, _, _ in items], [(c, s) for _, c, s in items], k=5)
    assert res["classes"] == len(CLASSES) == 32
    _check(res)


def test_heldout_retrieval_128px_jpeg(embedders) -> None:
    """Like the files demo.shapes.write_collection produces (and the index builder embeds)."""
    embed_text, embed_image = embedders
    items = sample(PER_CLASS * len(CLASSES), seed=HELDOUT_SEED + 1, size=128)
    images = []
    for img, _, _ in items:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=92)
        buf.seek(0)
        images.append(Image.open(buf).convert("RGB"))
    res = evaluate(embed_text, embed_image, images, [(c, s) for _, c, s in items], k=5)
    _check(res)
