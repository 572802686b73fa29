"""Where the weights come from (issue 11, item 25): random-init bundles are recorded and warned about, an
unreachable model hub fails fast with the way out, and a checkpoint/architecture mismatch shows its detail."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from export import model_loading
from export.cli import main
from handler.core.bundle import RANDOM_INIT_WARNING, is_random_init
from index_builder.cli import main as index_builder
from tests.bundle_fixtures import TINY_CONFIG, export_bundle
from tests.handler.conftest import make_client, make_settings
from tests.index_builder.conftest import collection


@pytest.fixture(scope="module")
def random_bundle(tmp_path_factory):
    return export_bundle(
        tmp_path_factory.mktemp("random") / "bundle",
        "--model-config",
        str(TINY_CONFIG),
        "--pretrained",
        "none",
    )


def _model(bundle):
    return json.loads((bundle / "manifest.json").read_text())["model"]


def test_manifest_records_random_init(random_bundle, tiny_bundle):
    assert _model(random_bundle)["random_init"] is True
    assert _model(tiny_bundle)["random_init"] is False  # a checkpoint file, however it was made
    # bundles written before the field: no tag and no checkpoint means random weights
    assert is_random_init({"name": "x", "pretrained": None, "checkpoint": None})
    assert not is_random_init({"name": "x", "pretrained": "openai", "checkpoint": None})


def test_info_warns_about_a_random_init_bundle(random_bundle, tiny_bundle):
    body = make_client(make_settings(random_bundle)).get("/info").json()
    assert body["model"]["random_init"] is True and body["warnings"] == [
        {"component": "model", "code": "random_init", "message": RANDOM_INIT_WARNING}
    ]
    body = make_client(make_settings(tiny_bundle)).get("/info").json()
    assert body["model"]["random_init"] is False and "warnings" not in body


def test_builder_warns_about_a_random_init_bundle(random_bundle, tiny_bundle, tmp_path, capsys):
    collection(tmp_path / "images", 3)
    for bundle, warned in ((random_bundle, True), (tiny_bundle, False)):
        capsys.readouterr()
        out = tmp_path / f"index-{warned}"
        assert (
            index_builder(
                [
                    "build",
                    "--source",
                    str(tmp_path / "images"),
                    "--bundle",
                    str(bundle),
                    "--out",
                    str(out),
                    "--quiet",
                ]
            )
            == 0
        )
        assert (f"warning: {RANDOM_INIT_WARNING}" in capsys.readouterr().err) is warned


def test_unreachable_hub_fails_fast_without_download_attempts(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    attempts = []

    def no_network(address, *args, **kwargs):  # every TCP connection, the probe's and the downloads'
        attempts.append(address)
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    assert (
        main(["--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k", "--out", str(tmp_path / "b")]) == 1
    )
    err = capsys.readouterr().err
    assert (
        "model hub (https://huggingface.co) is unreachable" in err
        and "--pretrained /path/to/checkpoint" in err
    )
    assert len(attempts) == 1, attempts  # the probe; no download retries


def test_checkpoint_architecture_mismatch_shows_the_mismatch(tiny_checkpoint, tmp_path, capsys):
    cfg = json.loads(TINY_CONFIG.read_text())
    cfg["embed_dim"] = 48
    cfg["vision_cfg"]["layers"] = 3
    other = tmp_path / "other-clip.json"
    other.write_text(json.dumps(cfg))
    assert (
        main(
            ["--model-config", str(other), "--pretrained", str(tiny_checkpoint), "--out", str(tmp_path / "b")]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "could not load checkpoint" in err and "matches the architecture" in err
    assert "size mismatch for text_projection" in err
    assert "Missing key(s)" in err and "visual.transformer.resblocks.2" in err


def test_error_detail_keeps_every_kind_of_line_but_bounds_the_size():
    keys = ", ".join(f'"layer.{i}.weight"' for i in range(2000))
    exc = RuntimeError(
        "Error(s) in loading state_dict for CLIP:\n\tMissing key(s) in state_dict: "
        + keys
        + "\n"
        + "\n".join(f"\tsize mismatch for p{i}: [3] vs [4]." for i in range(30))
    )
    lines = model_loading.error_detail(exc).split("\n  ")
    assert lines[0] == "Error(s) in loading state_dict for CLIP:"
    assert lines[1].startswith('Missing key(s) in state_dict: "layer.0.weight"') and lines[1].endswith(" ...")
    assert "size mismatch for p0: [3] vs [4]." in lines
    assert len(lines) == model_loading.ERROR_LINES + 1 and lines[-1] == "... (20 more lines)"
    assert max(map(len, lines)) <= model_loading.ERROR_LINE_CHARS + 4


def _initializers(path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_int8_text_tower_stores_the_token_embedding_in_8_bits(tiny_bundle):
    """Issue 11, item 26: dynamic quantization skipped Gather, so the token embedding (the largest tensor of a
    CLIP text tower) stayed fp32 and the int8 text tower barely shrank."""
    vocab, width = 49408, json.loads(TINY_CONFIG.read_text())["text_cfg"]["width"]
    fp32, int8 = _initializers(tiny_bundle / "textual.onnx"), _initializers(tiny_bundle / "textual.int8.onnx")
    assert any(a.shape == (vocab, width) and a.dtype == np.float32 for a in fp32.values())
    tables = [a for a in int8.values() if a.shape == (vocab, width)]
    assert tables and all(a.dtype == np.int8 for a in tables), [a.dtype for a in tables]
    ratio = (tiny_bundle / "textual.int8.onnx").stat().st_size / (tiny_bundle / "textual.onnx").stat().st_size
    assert ratio < 0.35, ratio
    assert json.loads((tiny_bundle / "manifest.json").read_text())["precisions"]["int8"]["accuracy"]["passed"]


def test_row_wise_int8_embedding_keeps_the_text_embeddings(tiny_bundle, tmp_path):
    """The table step on its own (fp32 otherwise) barely moves the embeddings, also for a table whose rows
    differ in norm by 1000x, as trained tables do (one scale per tensor would flush the small rows to
    zero)."""
    import onnx
    import onnxruntime as ort
    import open_clip
    from onnx import numpy_helper

    from export.onnx_export import quantize_gather_tables
    from export.parity import PARITY_TEXTS

    model = onnx.load(str(tiny_bundle / "textual.onnx"))
    table = next(i for i in model.graph.initializer if tuple(i.dims) == (49408, 32))
    w = numpy_helper.to_array(table).copy()
    w[::2] *= 1000.0  # rows of very different norms
    table.CopyFrom(numpy_helper.from_array(w, table.name))
    ids = open_clip.tokenize(PARITY_TEXTS, context_length=16).numpy()

    def embed(m):
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: ids})[0]

    ref = embed(model)
    assert quantize_gather_tables(model) == 1
    got = embed(model)
    assert (got * ref).sum(1).min() > 0.999  # both L2-normalised
