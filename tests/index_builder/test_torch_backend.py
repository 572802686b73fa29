"""``--backend torch``: open_clip with the bundle's weights gives the ONNX backend's vectors; other weights are
refused so the index's model fingerprint stays honest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import demo
from tests.index_builder.conftest import build_args, collection, current, read_version, vectors_by_id


def _checkpoint() -> Path:
    return demo.CHECKPOINT_PATH  # read at call time (the demo model may live elsewhere in a dev checkout)


def _compare(demo_bundle: Path, tmp_path: Path, cli, device: str) -> float:
    src = tmp_path / "src"
    collection(src, 48, seed=50, size=96)
    onnx_dest, torch_dest = tmp_path / "onnx", tmp_path / f"torch-{device}"
    assert cli(*build_args(src, demo_bundle, onnx_dest)).rc == 0
    r = cli(
        *build_args(
            src,
            demo_bundle,
            torch_dest,
            "--backend",
            "torch",
            "--pretrained",
            _checkpoint(),
            "--device",
            device,
        )
    )
    assert r.rc == 0, r.err
    a, b = read_version(onnx_dest), read_version(torch_dest)
    assert b["manifest"]["backend"] == "torch" and b["manifest"]["build"]["device"] == device
    assert b["manifest"]["model_fingerprint"] == a["manifest"]["model_fingerprint"]
    va, vb = vectors_by_id(a), vectors_by_id(b)
    assert set(va) == set(vb)
    return min(float(va[k] @ vb[k]) for k in va)


def test_torch_backend_matches_onnx_on_cpu(demo_bundle: Path, tmp_path: Path, cli) -> None:
    assert _compare(demo_bundle, tmp_path, cli, "cpu") >= 0.9999


@pytest.mark.cuda
def test_torch_backend_matches_onnx_on_cuda(demo_bundle: Path, tmp_path: Path, cli) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    assert _compare(demo_bundle, tmp_path, cli, "cuda") >= 0.9999


def test_torch_backend_refuses_other_weights(demo_bundle: Path, tmp_path: Path, cli) -> None:
    import torch

    src, dest = tmp_path / "src", tmp_path / "index"
    collection(src, 4, seed=51)
    state = torch.load(_checkpoint(), weights_only=True)
    state = {k: (v + 0.01 if v.is_floating_point() else v) for k, v in state.items()}  # fine-tuned, say
    other = tmp_path / "other.pt"
    torch.save(state, other)
    r = cli(*build_args(src, demo_bundle, dest, "--backend", "torch", "--pretrained", other))
    assert r.rc == 1 and "Traceback" not in r.err
    assert "sha256" in r.err and "differs from the checkpoint the bundle was exported from" in r.err
    r = cli(
        *build_args(src, demo_bundle, dest, "--backend", "torch", "--pretrained", tmp_path / "missing.pt")
    )
    assert r.rc == 2 and "no such checkpoint file" in r.err
    r = cli(
        *build_args(
            src, demo_bundle, dest, "--backend", "torch", "--pretrained", _checkpoint(), "--precision", "int8"
        )
    )
    assert r.rc == 2 and "fp32" in r.err
    assert current(dest) is None


def test_torch_backend_cuda_unavailable_is_a_clear_error(demo_bundle: Path, tmp_path: Path, cli) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    collection(tmp_path / "src", 2)
    r = cli(
        *build_args(
            tmp_path / "src",
            demo_bundle,
            tmp_path / "index",
            "--backend",
            "torch",
            "--pretrained",
            _checkpoint(),
            "--device",
            "cuda",
        )
    )
    assert r.rc == 2 and "CUDA is not available" in r.err


def test_switching_backends_reuses_vectors(demo_bundle: Path, tmp_path: Path, cli) -> None:
    """Same model fingerprint and precision: an incremental torch build keeps the onnx vectors of unchanged
    files (they agree to 1e-4) and embeds only new files."""
    src, dest = tmp_path / "src", tmp_path / "index"
    collection(src / "a", 8, seed=52)
    assert cli(*build_args(src, demo_bundle, dest)).rc == 0
    collection(src / "b", 3, seed=53)
    r = cli(*build_args(src, demo_bundle, dest, "--backend", "torch", "--pretrained", _checkpoint()))
    assert r.rc == 0 and "embedded 3" in r.out and "unchanged 8" in r.out
    emb = read_version(dest)["embeddings"]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
