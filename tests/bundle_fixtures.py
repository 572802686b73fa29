"""Session-wide model bundles for the tests (a pytest plugin, loaded from pyproject's addopts).

Bundles are exported once per test session with the real exporter: a tiny random-init OpenCLIP config,
the committed demo model, and the ViT-B-32 architecture with random init (checkpoint saved by the test).
"""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
TINY_CONFIG = DATA / "tiny-clip.json"
#: ``--config-override`` parts that shrink a real OpenCLIP config to tiny random-init towers (a small native
#: ViT in place of any timm tower; a 2-layer text transformer), used by the family tests and the models table.
TINY_VISION = {
    "image_size": 32,
    "layers": 1,
    "width": 64,
    "patch_size": 8,
    "head_width": 32,
    "timm_model_name": None,
    "timm_model_pretrained": None,
    "timm_pool": None,
    "timm_proj": None,
}
TINY_TEXT = {"width": 32, "heads": 2, "layers": 2}


def export_bundle(out: Path, *args: str) -> Path:
    from export.cli import main

    rc = main(["--out", str(out), "--quiet", *args])
    assert rc == 0, f"export failed with exit code {rc}"
    return out


def save_random_checkpoint(name: str, path: Path, seed: int = 0) -> Path:
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    import open_clip

    open_clip.add_model_config(TINY_CONFIG)
    return save_random_checkpoint("tiny-clip", tmp_path_factory.mktemp("ckpt") / "tiny-clip.pt")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_checkpoint) -> Path:
    """Tiny random-init CLIP (32 px, 2+2 layers, context 16) with fp32, fp16 and int8 variants."""
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    return export_bundle(
        out,
        "--model-config",
        str(TINY_CONFIG),
        "--pretrained",
        str(tiny_checkpoint),
        "--precision",
        "fp32",
        "fp16",
        "int8",
    )


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory) -> Path:
    """The demo model trained in this repo (demo/model), exported like any OpenCLIP checkpoint."""
    import demo

    if not demo.CHECKPOINT_PATH.is_file():
        pytest.fail(
            f"demo checkpoint missing at {demo.CHECKPOINT_PATH}; train it with `python -m demo.train`"
        )
    out = tmp_path_factory.mktemp("bundles") / "demo"
    return export_bundle(
        out,
        "--model-config",
        str(demo.CONFIG_PATH),
        "--pretrained",
        str(demo.CHECKPOINT_PATH),
        "--precision",
        "fp32",
        "int8",
    )


@pytest.fixture(scope="session")
def vitb32_checkpoint(tmp_path_factory) -> Path:
    """Random-init ViT-B-32 weights saved as a checkpoint file (no hub download possible here)."""
    return save_random_checkpoint("ViT-B-32", tmp_path_factory.mktemp("ckpt") / "vit-b-32-random.pt")


@pytest.fixture(scope="session")
def vitb32_bundle(tmp_path_factory, vitb32_checkpoint) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "vitb32"
    return export_bundle(out, "--model", "ViT-B-32", "--pretrained", str(vitb32_checkpoint))
