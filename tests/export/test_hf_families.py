"""SigLIP, SigLIP2, CLIPA and xlm-roberta (HF text tower) export offline, pass parity, and serve end to end.

Real open_clip configs, shrunk with --config-override (tiny towers, random init); tokenizers and the HF text
config are built in a temp directory (tests/hf_fixtures.py), never fetched from a hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.bundle_fixtures import TINY_TEXT, TINY_VISION, export_bundle
from tests.hf_fixtures import MULTILINGUAL, save_text_config, save_tokenizer

# family -> (open_clip model, tokenizer kind, HF text model type or None, preprocess-from tag or None)
FAMILIES = {
    "siglip": ("ViT-B-16-SigLIP", "unigram_t5", None, "webli"),
    "siglip2": ("ViT-B-16-SigLIP2", "unigram_gemma", None, "webli"),
    "clipa": ("ViT-L-14-CLIPA", "wordpiece", None, "datacomp1b"),
    "xlm-roberta": ("xlm-roberta-base-ViT-B-32", "unigram_xlmr", "xlm-roberta", None),
    "nllb": ("nllb-clip-base", "nllb", "m2m_100", None),
}


def export_family(family: str, root: Path) -> Path:
    from transformers import AutoTokenizer

    model, kind, hf_type, tag = FAMILIES[family]
    tok_dir = save_tokenizer(kind, root / "tokenizer")
    vocab = len(AutoTokenizer.from_pretrained(str(tok_dir)))
    override: dict = {"embed_dim": 32, "vision_cfg": TINY_VISION}
    args = ["--model", model, "--pretrained", "none", "--tokenizer", str(tok_dir)]
    if hf_type:
        pad = AutoTokenizer.from_pretrained(str(tok_dir)).pad_token_id
        cfg_dir = save_text_config(
            hf_type, root / "hf-config", vocab_size=vocab, pad_token_id=pad, context_length=77
        )
        args += ["--hf-config", str(cfg_dir)]
    else:
        override["text_cfg"] = {**TINY_TEXT, "vocab_size": vocab}
    if tag:
        args += ["--preprocess-from", tag]
    return export_bundle(root / "bundle", *args, "--config-override", json.dumps(override))


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_bundle(request, tmp_path_factory):
    return request.param, export_family(request.param, tmp_path_factory.mktemp(request.param))


def test_export_parity_and_runtime_ids(family_bundle):
    import open_clip

    from handler.core.runtime import load_bundle

    family, bundle = family_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["parity"]["passed"] and manifest["parity"]["text_max_abs"] <= 1e-5
    assert manifest["parity"]["image_max_abs"] <= 1e-5
    assert manifest["text"]["tokenizer"]["type"] == "hf_tokenizers"
    assert "tokenizer.json" in manifest["files"] and "bpe_simple_vocab_16e6.txt.gz" not in manifest["files"]
    model, _, _, tag = FAMILIES[family]
    if tag:  # per-family preprocessing taken from the pretrained tag, without its weights
        cfg = open_clip.get_pretrained_cfg(model, tag)
        assert manifest["image"]["mean"] == pytest.approx(list(cfg["mean"]))
        assert manifest["image"]["resize_mode"] == cfg.get("resize_mode", "shortest")
    emb = load_bundle(bundle)
    ids = emb.tokenize([*MULTILINGUAL, ""])
    assert ids.shape == (len(MULTILINGUAL) + 1, manifest["text"]["context_length"])
    vecs = emb.embed_texts(MULTILINGUAL)
    assert vecs.shape == (len(MULTILINGUAL), 32)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)


def test_builder_and_service_end_to_end(family_bundle, tmp_path):
    from demo.shapes import write_collection
    from index_builder.cli import main as build_main
    from tests.handler.conftest import make_client, make_settings, render_png

    family, bundle = family_bundle
    src, dest = tmp_path / "src", tmp_path / "index"
    write_collection(src, 12, 0, size=48, fmt="png")
    assert (
        build_main(["build", "--source", str(src), "--bundle", str(bundle), "--out", str(dest), "--quiet"])
        == 0
    )
    client = make_client(make_settings(bundle, dest))
    r = client.post("/search", json={"text": "ein rotes Quadrat 🟥", "k": 3})
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 3
    r = client.post(
        "/search", files={"image": ("q.png", render_png("red", "circle"), "image/png")}, data={"k": "3"}
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 3
    # NLLB's source-language code is a request option; other models refuse it with a 4xx JSON error.
    texts = {"text": ["a red square", "un carré rouge"]}
    r = client.post("/embeddings", json={**texts, "language": "fra_Latn"})
    if family == "nllb":
        assert r.status_code == 200, r.text
        default = client.post("/embeddings", json=texts).json()["text_embeddings"]
        assert not np.allclose(r.json()["text_embeddings"], default)
        r = client.post("/search", data={"text": "un carré rouge", "language": "fra_Latn", "k": "2"})
        assert r.status_code == 200 and len(r.json()["results"]) == 2, r.text
        r = client.post("/search", json={"text": "x", "language": "xx_Xxxx"})
        assert r.status_code == 400 and "unknown language" in r.json()["error"]["message"], r.text
    else:
        assert 400 <= r.status_code < 500 and r.json()["error"]["code"] == "invalid_text", r.text
