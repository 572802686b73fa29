"""Exporter error handling for HF tokenizers / text towers, external data, preprocessing overrides."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.bundle_fixtures import TINY_CONFIG, export_bundle
from tests.hf_fixtures import save_text_config, save_tokenizer


def _run(args, capsys):
    from export.cli import main

    capsys.readouterr()
    rc = main(["--quiet", *args])
    return rc, capsys.readouterr().err


def test_tokenizer_failure_is_a_clear_error(tmp_path, capsys, monkeypatch):
    """get_tokenizer ran outside the error handling: a hub failure was a raw traceback."""
    import open_clip

    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(open_clip, "get_tokenizer", offline)
    rc, err = _run(
        [
            "--model-config",
            str(TINY_CONFIG),
            "--pretrained",
            "none",
            "--out",
            str(tmp_path / "b"),
            "--config-override",
            '{"text_cfg": {"hf_tokenizer_name": "timm/ViT-B-16-SigLIP"}}',
        ],
        capsys,
    )
    assert rc == 1
    assert "could not load the tokenizer 'timm/ViT-B-16-SigLIP'" in err and "--tokenizer DIR" in err
    assert "Traceback" not in err and not (tmp_path / "b").exists()


def test_hf_text_tower_failure_names_the_tower_not_a_checkpoint(tmp_path, capsys):
    """Was: "could not load checkpoint None"."""
    tok = save_tokenizer("unigram_xlmr", tmp_path / "tok")
    bad = tmp_path / "hf"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    rc, err = _run(
        [
            "--model",
            "xlm-roberta-base-ViT-B-32",
            "--pretrained",
            "none",
            "--tokenizer",
            str(tok),
            "--hf-config",
            str(bad),
            "--out",
            str(tmp_path / "b"),
        ],
        capsys,
    )
    assert rc == 1
    assert "could not build the Hugging Face text tower" in err and "--hf-config DIR" in err
    assert "checkpoint None" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model-config", str(TINY_CONFIG), "--tokenizer", "{tmp}"], "uses the CLIP BPE tokenizer"),
        (["--model", "xlm-roberta-base-ViT-B-32", "--hf-config", "{tmp}/missing"], "no config.json"),
        (["--model-config", str(TINY_CONFIG), "--hf-config", "{cfg}"], "not a Hugging Face model"),
        (
            ["--model-config", str(TINY_CONFIG), "--config-override", "{not json"],
            "--config-override: not valid JSON",
        ),
        (
            ["--model-config", str(TINY_CONFIG), "--preprocess", '{"mean": [0, 0, 0], "colour": 1}'],
            "unknown keys",
        ),
        (["--model", "ViT-B-16-SigLIP", "--preprocess-from", "nope"], "not a pretrained tag"),
    ],
)
def test_bad_offline_arguments(args, message, tmp_path, capsys):
    cfg = save_text_config("xlm-roberta", tmp_path / "cfg", vocab_size=100, pad_token_id=1, context_length=16)
    args = [a.replace("{tmp}", str(tmp_path)).replace("{cfg}", str(cfg)) for a in args]
    rc, err = _run([*args, "--pretrained", "none", "--out", str(tmp_path / "b")], capsys)
    assert rc == 1 and message in err, err
    assert err.count("\n") == 1  # one line, no traceback


def test_preprocess_json_is_recorded_and_used(tmp_path):
    """MobileCLIP-style preprocessing (mean 0 / std 1, bilinear) from --preprocess, end to end."""
    from handler.core.runtime import load_bundle

    pp = {
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "interpolation": "bilinear",
        "resize_mode": "squash",
    }
    bundle = export_bundle(
        tmp_path / "b",
        "--model-config",
        str(TINY_CONFIG),
        "--pretrained",
        "none",
        "--preprocess",
        json.dumps(pp),
    )
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {k: manifest["image"][k] for k in pp} == pp
    assert manifest["parity"]["passed"]  # parity used the same preprocessing on the PyTorch side
    emb = load_bundle(bundle)
    from PIL import Image

    pixels = emb.preprocess(Image.new("RGB", (50, 20), (255, 0, 0)))
    assert pixels.shape == (3, 32, 32) and pixels.max() == pytest.approx(1.0) and pixels.min() == 0.0


def _model(n_floats: int) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(n_floats, dtype=np.float32).reshape(1, -1), "w")
    node = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_floats])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_floats])],
        [w],
    )
    return helper.make_model(graph)


def test_external_data_size_decision():
    from export.onnx_export import EXTERNAL_DATA_BYTES, needs_external_data

    assert EXTERNAL_DATA_BYTES < 2**31  # protobuf's hard limit
    assert not needs_external_data(100 * 2**20)
    assert not needs_external_data(EXTERNAL_DATA_BYTES)
    assert needs_external_data(EXTERNAL_DATA_BYTES + 1)
    assert needs_external_data(int(2.5 * 2**30))


def test_save_onnx_writes_one_external_data_file_over_the_limit(tmp_path):
    import onnxruntime as ort

    from export.onnx_export import save_onnx

    small = save_onnx(_model(1000), tmp_path / "small.onnx", limit=10_000)
    assert small is None and not (tmp_path / "small.onnx.data").exists()
    data = save_onnx(_model(10_000), tmp_path / "big.onnx", limit=10_000)  # 40 kB of weights > limit
    assert data == tmp_path / "big.onnx.data" and data.stat().st_size >= 40_000
    assert (tmp_path / "big.onnx").stat().st_size < 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data", "small.onnx"]
    onnx.checker.check_model(str(tmp_path / "big.onnx"))
    x = np.ones((1, 10_000), np.float32)
    y = ort.InferenceSession(str(tmp_path / "big.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    assert y[0, 9_999] == 10_000.0


def test_bundle_lists_external_data_with_its_tower(tmp_path):
    from handler.core.bundle import Bundle

    manifest = {
        "precisions": {
            "fp32": {
                "textual": "textual.onnx",
                "visual": "visual.onnx",
                "external_data": {"visual": "visual.onnx.data"},
            }
        }
    }
    b = Bundle(tmp_path, manifest)
    assert b.tower_files("textual") == ["textual.onnx"]
    assert b.tower_files("visual") == ["visual.onnx", "visual.onnx.data"]
