"""Export: bundle contents, ONNX-vs-PyTorch parity (independent of the exporter's own check), variants."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import open_clip
import pytest
import torch
from PIL import Image

from export import parity
from export.cli import build_parser, main
from handler.core.bundle import fingerprint, onnx_filename, read_manifest, sha256_file
from handler.core.errors import ArtifactError
from tests.bundle_fixtures import TINY_CONFIG

TEXTS = ["a photo of a dog", "", "ünïcödé 漢字 🙂", "word " * 100]


def _torch_model(name: str, checkpoint):
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(checkpoint))
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


def _images(n: int, seed: int = 123) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 255, (int(h), int(w), 3), dtype=np.uint8))
        for h, w in rng.integers(20, 260, (n, 2))
    ]


def _ort(path, precision="fp32"):
    from handler.core.encoders import create_session

    return create_session(path, precision)


def _check_parity_against_torch(bundle, name, checkpoint):
    model, preprocess, tokenizer = _torch_model(name, checkpoint)
    ids = tokenizer(TEXTS)
    pixels = torch.stack([preprocess(im) for im in _images(4)])
    with torch.no_grad():
        ref_t = model.encode_text(ids, normalize=True).numpy()
        ref_v = model.encode_image(pixels, normalize=True).numpy()
    text, visual = _ort(bundle / "textual.onnx"), _ort(bundle / "visual.onnx")
    for bs in (1, 3):
        got_t = np.concatenate(
            [text.run(None, {"input_ids": ids.numpy()[i : i + bs]})[0] for i in range(0, len(ids), bs)]
        )
        got_v = np.concatenate(
            [
                visual.run(None, {"pixel_values": pixels.numpy()[i : i + bs]})[0]
                for i in range(0, len(pixels), bs)
            ]
        )
        assert np.abs(got_t - ref_t).max() <= 1e-5, f"text batch {bs}"
        assert np.abs(got_v - ref_v).max() <= 1e-5, f"image batch {bs}"
        np.testing.assert_allclose(np.linalg.norm(got_v, axis=1), 1.0, atol=1e-5)


def test_tiny_bundle_matches_pytorch_at_batch_sizes_1_and_3(tiny_bundle, tiny_checkpoint):
    _check_parity_against_torch(tiny_bundle, "tiny-clip", tiny_checkpoint)


def test_vitb32_random_init_export_and_parity(vitb32_bundle, vitb32_checkpoint):
    manifest = read_manifest(vitb32_bundle).manifest
    assert manifest["model"]["name"] == "ViT-B-32"
    assert manifest["model"]["checkpoint"]["sha256"] == sha256_file(vitb32_checkpoint)
    assert manifest["embed_dim"] == 512 and manifest["image"]["size"] == [224, 224]
    assert manifest["text"]["context_length"] == 77
    assert manifest["parity"]["passed"] and manifest["parity"]["image_max_abs"] <= 1e-5
    _check_parity_against_torch(vitb32_bundle, "ViT-B-32", vitb32_checkpoint)


def test_manifest_describes_bundle(tiny_bundle, tiny_checkpoint):
    bundle = read_manifest(tiny_bundle)
    bundle.verify()
    m = bundle.manifest
    assert m["schema_version"] == 1 and m["kind"] == "clip-onnx-bundle"
    assert m["model"] == {
        "name": "tiny-clip",
        "pretrained": None,
        "checkpoint": m["model"]["checkpoint"],
        "random_init": False,
        "config": json.loads(TINY_CONFIG.read_text()),
    }
    assert m["model"]["checkpoint"]["file"] == tiny_checkpoint.name
    assert m["embed_dim"] == 32
    assert m["text"]["context_length"] == 16
    assert m["text"]["tokenizer"]["sot_token_id"] == 49406 and m["text"]["tokenizer"]["eot_token_id"] == 49407
    assert m["image"] == {
        "size": [32, 32],
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }
    on_disk = sorted(p.name for p in tiny_bundle.iterdir() if p.name != "manifest.json")
    assert sorted(m["files"]) == on_disk
    for name, entry in m["files"].items():
        assert entry == {
            "sha256": sha256_file(tiny_bundle / name),
            "size": (tiny_bundle / name).stat().st_size,
        }
    fp32 = {n: m["files"][n]["sha256"] for n in ("textual.onnx", "visual.onnx")}
    assert m["model_fingerprint"] == fingerprint(fp32) == m["precisions"]["fp32"]["fingerprint"]
    assert set(m["precisions"]) == {"fp32", "fp16", "int8"}
    assert m["parity"]["passed"] and m["parity"]["text_max_abs"] <= 1e-5
    assert set(m["parity"]["batch_sizes"]) == {"1", "3"}
    assert set(m["versions"]) == {"torch", "open_clip", "onnx", "onnxruntime"}
    assert m["io"]["textual"]["input"] == {"name": "input_ids", "dtype": "int64"}


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_precision_variants_load_and_meet_recorded_thresholds(tiny_bundle, precision):
    m = read_manifest(tiny_bundle).manifest
    acc = m["precisions"][precision]["accuracy"]
    thresholds = parity.VARIANT_THRESHOLDS[precision]
    assert acc["passed"] and acc["thresholds"] == thresholds
    assert min(acc["text"]["cosine_min"], acc["image"]["cosine_min"]) >= thresholds["cosine_min"]
    assert acc["top10_overlap"] >= thresholds["top10_overlap"]
    # Independent check on fresh inputs: the variant stays close to fp32.
    pixels = np.random.default_rng(5).normal(size=(3, 3, 32, 32)).astype(np.float32)
    ref = _ort(tiny_bundle / "visual.onnx").run(None, {"pixel_values": pixels})[0]
    got = _ort(tiny_bundle / onnx_filename("visual", precision), precision).run(
        None, {"pixel_values": pixels}
    )[0]
    cos = (ref * got).sum(1) / np.linalg.norm(got, axis=1)
    assert cos.min() >= thresholds["cosine_min"]
    ids = np.zeros((2, 16), np.int64)
    ids[:, 0], ids[:, 1:3] = 49406, [320, 49407]
    out = _ort(tiny_bundle / onnx_filename("textual", precision), precision).run(None, {"input_ids": ids})[0]
    assert out.shape == (2, 32) and out.dtype == np.float32


def test_tampered_file_is_refused(tiny_bundle, tmp_path):
    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    data = bytearray((copy / "visual.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "visual.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"visual\.onnx"):
        read_manifest(copy).verify()


def test_existing_bundle_needs_force(tiny_bundle, tiny_checkpoint, tmp_path, capsys):
    out = shutil.copytree(tiny_bundle, tmp_path / "b")
    before = (out / "manifest.json").read_text()
    args = [
        "--model-config",
        str(TINY_CONFIG),
        "--pretrained",
        str(tiny_checkpoint),
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == before
    assert main([*args, "--force"]) == 0
    after = json.loads((out / "manifest.json").read_text())
    assert after["model_fingerprint"] == json.loads(before)["model_fingerprint"]
    assert set(after["precisions"]) == {"fp32"}
    assert not any(p.name.startswith(".b.") for p in tmp_path.iterdir())


def test_interrupted_export_leaves_no_bundle(tiny_checkpoint, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(parity, "measure_parity", boom)
    out = tmp_path / "bundle"
    assert (
        main(
            [
                "--model-config",
                str(TINY_CONFIG),
                "--pretrained",
                str(tiny_checkpoint),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 130
    )
    assert list(tmp_path.iterdir()) == []


def test_parity_failure_fails_export(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    real = parity.measure_parity

    def worse(*a, **k):
        result = real(*a, **k)
        return {**result, "image_max_abs": 1e-3, "passed": False}

    monkeypatch.setattr(parity, "measure_parity", worse)
    out = tmp_path / "bundle"
    assert (
        main(["--model-config", str(TINY_CONFIG), "--pretrained", str(tiny_checkpoint), "--out", str(out)])
        == 1
    )
    assert "parity check failed" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "ViT-B-33", "--pretrained", "none"], "Did you mean: ViT-B-32"),
        (["--model", "ViT-B-32", "--pretrained", "/nonexistent/weights.pt"], "--pretrained /path/to/"),
        (["--model", "ViT-B-32", "--pretrained", "no_such_tag"], "Known tags for ViT-B-32"),
        (["--model", "ViT-B-32", "--pretrained", "none", "--device", "cuda:0"], "CUDA is not available"),
        (["--model-config", "/nonexistent/cfg.json", "--pretrained", "none"], "file not found"),
    ],
)
def test_bad_input_exits_nonzero_with_message(args, message, tmp_path, capsys):
    if "cuda" in " ".join(args) and torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert main([*args, "--out", str(tmp_path / "b")]) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_corrupt_checkpoint_and_bad_config(tmp_path, capsys):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"definitely not a checkpoint")
    assert (
        main(["--model-config", str(TINY_CONFIG), "--pretrained", str(bad), "--out", str(tmp_path / "b")])
        == 1
    )
    assert "could not load checkpoint" in capsys.readouterr().err
    cfg = tmp_path / "broken.json"
    cfg.write_text("{not json")
    assert main(["--model-config", str(cfg), "--pretrained", "none", "--out", str(tmp_path / "b")]) == 1
    assert "not valid JSON" in capsys.readouterr().err


def test_weights_that_cannot_be_downloaded_say_how_to_pass_a_local_file(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    # The hub is unreachable here anyway; offline mode makes the failure immediate instead of a network timeout.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert (
        main(["--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k", "--out", str(tmp_path / "b")]) == 1
    )
    err = capsys.readouterr().err
    assert "could not load pretrained weights" in err and "--pretrained /path/to/checkpoint" in err


def test_unwritable_output(tiny_checkpoint, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert (
        main(
            [
                "--model-config",
                str(TINY_CONFIG),
                "--pretrained",
                str(tiny_checkpoint),
                "--out",
                str(blocker / "bundle"),
            ]
        )
        == 1
    )
    assert "cannot create parent directory" in capsys.readouterr().err


def test_defaults_come_from_openclip_api_environment(monkeypatch):
    monkeypatch.setenv("MODEL_NAME", "ViT-B-16")
    monkeypatch.setenv("MODEL_PRETRAINED", "openai")
    args = build_parser().parse_args(["--out", "x"])
    assert (args.model, args.pretrained) == ("ViT-B-16", "openai")
    monkeypatch.delenv("MODEL_NAME")
    monkeypatch.delenv("MODEL_PRETRAINED")
    args = build_parser().parse_args(["--out", "x"])
    assert (args.model, args.pretrained, args.precision) == ("ViT-B-32", "laion2b_s34b_b79k", ["fp32"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_export_parity(tiny_checkpoint, tmp_path):
    out = tmp_path / "cuda"
    assert (
        main(
            [
                "--model-config",
                str(TINY_CONFIG),
                "--pretrained",
                str(tiny_checkpoint),
                "--out",
                str(out),
                "--device",
                "cuda",
                "--quiet",
            ]
        )
        == 0
    )
    m = read_manifest(out).manifest
    assert m["parity"]["device"] == "cuda" and m["parity"]["passed"]


def test_onnx_batch_axis_is_dynamic(tiny_bundle):
    sess = ort.InferenceSession(str(tiny_bundle / "textual.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == ["batch", "sequence"]
    assert sess.get_outputs()[0].shape == ["batch", 32]
    sess = ort.InferenceSession(str(tiny_bundle / "visual.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == ["batch", 3, 32, 32]


def _tiny_torch(checkpoint):
    open_clip.add_model_config(TINY_CONFIG)
    return open_clip.create_model("tiny-clip", pretrained=str(checkpoint)).eval(), open_clip.get_tokenizer(
        "tiny-clip"
    )


def test_text_graph_takes_any_length_and_trimming_is_exact(tiny_bundle, tiny_checkpoint):
    """CLIP's text tower is causal and pools at EOT: the bundle says so, the graph takes any length up to
    context_length, and trimmed ids give the torch numbers and the untrimmed ONNX numbers."""
    manifest = read_manifest(tiny_bundle).manifest
    assert manifest["text"]["variable_length"] is True and "variable_length_reason" not in manifest["text"]
    p = manifest["parity"]
    assert p["trimmed"] and p["passed"] and p["trimmed_vs_untrimmed_max_abs"] <= parity.TRIM_MAX_ABS == 1e-6
    assert all(b["text_trimmed_max_abs"] <= 1e-5 for b in p["batch_sizes"].values())
    model, tokenizer = _tiny_torch(tiny_checkpoint)
    texts = ["", "a cat", "a photo of a red circle on a white", "x " * 40]
    ids = tokenizer(texts)
    with torch.no_grad():
        ref = model.encode_text(ids, normalize=True).numpy()
    sess = _ort(tiny_bundle / "textual.onnx")
    full = sess.run(None, {"input_ids": ids.numpy()})[0]
    for i in range(len(texts)):  # each text alone, trimmed to its own tokens
        row = ids.numpy()[i : i + 1]
        n = int(np.flatnonzero(row[0])[-1]) + 1
        got = sess.run(None, {"input_ids": row[:, :n]})[0]
        assert np.abs(got - ref[i : i + 1]).max() <= 1e-5 and np.abs(got - full[i : i + 1]).max() <= 1e-6
    for precision in ("fp16", "int8"):  # variants derived from the fp32 graph keep the dynamic axis
        sess = _ort(tiny_bundle / onnx_filename("textual", precision), precision)
        short, whole = (sess.run(None, {"input_ids": ids.numpy()[1:2, :n]})[0][0] for n in (4, 16))
        assert float(short @ whole / np.linalg.norm(short) / np.linalg.norm(whole)) > 0.99


@pytest.mark.parametrize(
    ("text_cfg", "reason"),
    [
        ({"no_causal_mask": True}, "not causal"),
        ({"pool_type": "first"}, "pools with 'first'"),
    ],
)
def test_towers_where_trimming_is_invalid_keep_fixed_length(text_cfg, reason, tmp_path):
    """A non-causal or non-EOT-pooled text tower keeps context_length columns and says why."""
    cfg = json.loads(TINY_CONFIG.read_text())
    cfg["text_cfg"].update(text_cfg)
    config = tmp_path / "tiny-fixed.json"
    config.write_text(json.dumps(cfg))
    out = tmp_path / "bundle"
    assert main(["--model-config", str(config), "--pretrained", "none", "--out", str(out), "--quiet"]) == 0
    text = read_manifest(out).manifest["text"]
    assert text["variable_length"] is False and reason in text["variable_length_reason"]
    sess = _ort(out / "textual.onnx")
    assert sess.get_inputs()[0].shape == ["batch", 16]
    assert "trimmed" not in read_manifest(out).manifest["parity"]


def test_trimmed_vs_untrimmed_mismatch_fails_export(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """The exporter runs the runtime's own trimming; if trimming changed a result, export fails."""
    monkeypatch.setattr(parity, "runtime_trim", lambda ids, pad_id: ids[:, : max(1, ids.shape[1] // 2)])
    out = tmp_path / "bundle"
    assert (
        main(["--model-config", str(TINY_CONFIG), "--pretrained", str(tiny_checkpoint), "--out", str(out)])
        == 1
    )
    assert "trimmed vs untrimmed text" in capsys.readouterr().err
    assert not out.exists()


def test_fixed_length_text_option(tiny_checkpoint, tmp_path):
    out = tmp_path / "fixed"
    assert (
        main(
            [
                "--model-config",
                str(TINY_CONFIG),
                "--pretrained",
                str(tiny_checkpoint),
                "--out",
                str(out),
                "--fixed-length-text",
                "--quiet",
            ]
        )
        == 0
    )
    text = read_manifest(out).manifest["text"]
    assert text["variable_length"] is False and "--fixed-length-text" in text["variable_length_reason"]
    assert _ort(out / "textual.onnx").get_inputs()[0].shape == ["batch", 16]
    _check_parity_against_torch(out, "tiny-clip", tiny_checkpoint)


def test_export_attention_matches_multihead_attention():
    """ExportMHA is nn.MultiheadAttention's maths (self-attention, float and bool masks); anything else is
    delegated to the wrapped module; the swap is undone on exit."""
    from export.attention import ExportMHA, export_attention

    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    x, other = torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    causal = torch.full((5, 5), float("-inf")).triu(1)
    wrapped = ExportMHA(mha)
    with torch.no_grad():
        for mask in (None, causal, causal.isinf()):
            torch.testing.assert_close(wrapped(x, x, x, attn_mask=mask)[0], mha(x, x, x, attn_mask=mask)[0])
        torch.testing.assert_close(wrapped(x, other, other)[0], mha(x, other, other)[0])  # cross-attention
    holder = torch.nn.Module()
    holder.attn = mha
    with export_attention(holder) as n:
        assert n == 1 and isinstance(holder.attn, ExportMHA)
    assert holder.attn is mha
