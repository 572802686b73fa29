"""demo.train: a short run writes a checkpoint that open_clip loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import open_clip
import torch

from demo import CONFIG_PATH, MODEL_NAME
from demo.torch_model import register_model_config

REPO = Path(__file__).resolve().parents[2]


def test_short_training_run_writes_loadable_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "ckpt" / "demo-clip.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "demo.train",
            "--out",
            str(out),
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--log-every",
            "1",
            "--eval-per-class",
            "1",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained 3 steps" in proc.stdout
    assert "zero_shot_accuracy" in proc.stdout
    assert out.is_file()
    assert out.stat().st_size < 10 * 1024 * 1024

    register_model_config()
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL_NAME, pretrained=str(out))
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    # fp16 tensors were copied into fp32 parameters
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for name, p in model.state_dict().items():
        torch.testing.assert_close(p, state[name].to(p.dtype), rtol=0, atol=0)
    assert preprocess.transforms[0].size in (64, [64], (64, 64))
    tokens = open_clip.get_tokenizer(MODEL_NAME)(["a red circle"])
    with torch.no_grad():
        emb = model.encode_text(tokens, normalize=True)
    assert emb.shape == (1, model.text_projection.shape[1])


def test_register_model_config_is_idempotent() -> None:
    assert register_model_config() == MODEL_NAME == CONFIG_PATH.stem
    n = len(open_clip.list_models())
    register_model_config()
    assert len(open_clip.list_models()) == n
    assert MODEL_NAME in open_clip.list_models()
