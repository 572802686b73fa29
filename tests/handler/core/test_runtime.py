"""handler.core.runtime: the torch-free embedder reproduces PyTorch open_clip end to end."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import demo
from handler.core.errors import ArtifactError, ConfigError, ImageTooLargeError, InvalidImageError
from handler.core.runtime import load_bundle

ROOT = Path(__file__).resolve().parents[3]
HANDLER = ROOT / "handler"
TEXTS = ["a red circle", "", "a photo of a 猫 🐈 &amp; friends", "over-long " * 80, "  Mixed\tCASE  "]


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    out = []
    for w, h in [(64, 64), (300, 200), (31, 97), (1, 1), (640, 480)]:
        out.append(Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)))
    out.append(Image.fromarray(rng.integers(0, 255, (50, 80, 4), dtype=np.uint8), "RGBA"))
    out.append(Image.fromarray(rng.integers(0, 255, (90, 40), dtype=np.uint8), "L"))
    return out


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _assert_matches_open_clip(bundle: Path, name: str, checkpoint: Path, tmp_path: Path) -> None:
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(checkpoint))
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    images = _images()
    emb = load_bundle(bundle)
    # transparent images are composited over white, a deliberate deviation from open_clip (which drops
    # alpha) tested in test_preprocess.py: for those the torch model gets our pixels
    pixels = [preprocess(im) if im.mode != "RGBA" else torch.from_numpy(emb.preprocess(im)) for im in images]
    with torch.no_grad():
        ref_t = model.encode_text(tokenizer(TEXTS), normalize=True).numpy()
        ref_v = model.encode_image(torch.stack(pixels), normalize=True).numpy()
    np.testing.assert_array_equal(emb.tokenize(TEXTS), tokenizer(TEXTS).numpy())
    got_t = emb.embed_texts(TEXTS)
    assert got_t.dtype == np.float32 and got_t.shape == ref_t.shape
    assert np.abs(got_t - ref_t).max() <= 1e-5
    # Every input kind: PIL image, encoded bytes, a path.
    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(_png(im))
    for inputs in (images, [_png(im) for im in images], paths, [str(p) for p in paths]):
        got_v = emb.embed_images(inputs)
        assert np.abs(got_v - ref_v).max() <= 1e-5
    for i, im in enumerate(images[:2]):
        assert np.abs(emb.preprocess(im) - preprocess(im).numpy()).max() <= 1e-5, i


def test_tiny_model_matches_open_clip(tiny_bundle, tiny_checkpoint, tmp_path):
    _assert_matches_open_clip(tiny_bundle, "tiny-clip", tiny_checkpoint, tmp_path)


def test_demo_model_matches_open_clip(demo_bundle, tmp_path):
    open_clip.add_model_config(demo.CONFIG_PATH)
    _assert_matches_open_clip(demo_bundle, demo.MODEL_NAME, demo.CHECKPOINT_PATH, tmp_path)


def test_vitb32_random_init_matches_open_clip(vitb32_bundle, vitb32_checkpoint, tmp_path):
    _assert_matches_open_clip(vitb32_bundle, "ViT-B-32", vitb32_checkpoint, tmp_path)


def test_embedder_api(tiny_bundle):
    emb = load_bundle(tiny_bundle, threads=1)
    assert emb.dim == 32 and emb.context_length == 16 and emb.image_size == (32, 32)
    assert not emb.visual_loaded, "the vision tower loads lazily"
    ids = emb.tokenize(["a", "b c"])
    assert ids.shape == (2, 16) and ids.dtype == np.int64
    px = emb.preprocess(Image.new("RGB", (40, 30), "red"))
    assert px.shape == (3, 32, 32) and px.dtype == np.float32
    out = emb.embed_images([Image.new("RGB", (40, 30), "red")])
    assert emb.visual_loaded and out.shape == (1, 32)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert emb.embed_texts([]).shape == (0, 32)
    assert emb.embed_images([]).shape == (0, 32)
    # Batching does not change results.
    many = [f"text number {i}" for i in range(70)]
    np.testing.assert_allclose(
        emb.embed_texts(many), np.concatenate([emb.embed_texts([t]) for t in many]), atol=1e-5
    )
    ids, truncated = emb.tokenize_with_info(["short", "long " * 50])
    assert truncated == [False, True] and ids[1, -1] == 49407


# int8 on both models: without reduce_range the int8 text towers fell to cosine 0.96 (tiny) / 0.986 (demo) on
# this AVX2 CPU (u8s8 saturation without VNNI); the export quantizes with 7-bit weights since then.
@pytest.mark.parametrize(
    ("bundle", "precision"), [("tiny_bundle", "fp16"), ("tiny_bundle", "int8"), ("demo_bundle", "int8")]
)
def test_precision_variants(request, bundle, precision):
    path = request.getfixturevalue(bundle)
    ref = load_bundle(path)
    emb = load_bundle(path, precision=precision)
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    cos = float((ref.embed_images([img]) * emb.embed_images([img])).sum())
    assert cos > 0.99
    cos_t = (ref.embed_texts(TEXTS) * emb.embed_texts(TEXTS)).sum(1)
    assert cos_t.min() > 0.99


def test_unknown_precision_is_a_config_error(tiny_bundle, tmp_path):
    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    with pytest.raises(ConfigError, match="precision 'bf16'"):
        load_bundle(copy, precision="bf16")


def test_checksums_verified_on_load(tiny_bundle, tmp_path):
    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    (copy / "textual.onnx").write_bytes((copy / "textual.onnx").read_bytes()[:-10])
    with pytest.raises(ArtifactError, match=r"textual\.onnx"):
        load_bundle(copy)
    copy = shutil.copytree(tiny_bundle, tmp_path / "c")
    data = bytearray((copy / "visual.onnx").read_bytes())
    data[-100] ^= 1
    (copy / "visual.onnx").write_bytes(bytes(data))
    emb = load_bundle(copy)  # text works; the corrupt vision tower is refused when first used
    assert emb.embed_texts(["ok"]).shape == (1, 32)
    with pytest.raises(ArtifactError, match=r"visual\.onnx"):
        emb.embed_images([Image.new("RGB", (8, 8))])


def test_missing_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="not a model bundle"):
        load_bundle(tmp_path)


def test_bad_images_raise_specific_errors(tiny_bundle):
    emb = load_bundle(tiny_bundle, max_pixels=10_000)
    for bad in (b"", b"not an image at all", _png(Image.new("RGB", (50, 50)))[:40]):
        with pytest.raises(InvalidImageError):
            emb.embed_images([bad])
    with pytest.raises(ImageTooLargeError):
        emb.embed_images([_png(Image.new("RGB", (200, 200)))])


@pytest.mark.s3
def test_load_bundle_from_s3_with_local_cache(tiny_bundle, s3_server, tmp_path):
    bucket = s3_server.make_bucket()
    client = s3_server.client()
    for f in tiny_bundle.iterdir():
        client.upload_file(str(f), bucket, f"models/tiny/{f.name}")
    cache = tmp_path / "cache"
    remote = load_bundle(f"s3://{bucket}/models/tiny", precision="int8", cache_dir=cache)
    local = load_bundle(tiny_bundle, precision="int8")
    np.testing.assert_array_equal(remote.embed_texts(TEXTS), local.embed_texts(TEXTS))
    cached = sorted(p.name for p in next(cache.joinpath("bundles").iterdir()).iterdir())
    assert cached == sorted(
        ["manifest.json", "textual.int8.onnx", "visual.int8.onnx", "bpe_simple_vocab_16e6.txt.gz"]
    ), "only the chosen precision is fetched"
    # A second cold start reuses the cache; a corrupted cache file is detected and fetched again.
    target = next(cache.joinpath("bundles").iterdir()) / "textual.int8.onnx"
    target.write_bytes(b"garbage")
    again = load_bundle(f"s3://{bucket}/models/tiny", precision="int8", cache_dir=cache)
    np.testing.assert_array_equal(again.embed_texts(TEXTS), local.embed_texts(TEXTS))


def test_runtime_is_torch_free_in_a_fresh_interpreter():
    code = (
        "import sys, handler.core.runtime, handler.core.index, handler.core.storage, "
        "handler.core.tokenizer, handler.core.preprocess\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision', 'open_clip'})\n"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"torch-family modules imported by handler: {res.stdout} {res.stderr}"


def test_no_torch_imports_in_handler_sources():
    import ast

    offenders = []
    for path in HANDLER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0]
                in {"torch", "torchvision", "open_clip", "transformers", "export", "index_builder"}
            ]
    assert offenders == [], "handler/ must not import torch, open_clip, transformers, export or index_builder"


def test_core_imports_nothing_from_the_service():
    """The picture is one-way: core <- export, index_builder, service; the core never imports the service."""
    import ast

    offenders = []
    for path in (HANDLER / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [
                    f"{node.module}.{a.name}" for a in node.names if node.module == "handler"
                ]
            offenders += [
                f"{path.name}: {n}"
                for n in names
                if n.startswith("handler") and not n.startswith("handler.core")
            ]
    assert offenders == [], offenders


class _SpySession:
    """Records the input shapes the text encoder passes to onnxruntime."""

    def __init__(self, session):
        self.session, self.shapes = session, []

    def run(self, outputs, feeds):
        self.shapes.append(next(iter(feeds.values())).shape)
        return self.session.run(outputs, feeds)


def test_variable_length_bundle_runs_each_batch_up_to_its_longest_text(tiny_bundle):
    emb = load_bundle(tiny_bundle, batch_size=2)
    assert emb.variable_length
    texts = ["a cat", "a b", "a photo of a red circle on white", "x"]
    ids = emb.tokenize(texts)
    full = emb._text.session.run(None, {"input_ids": ids})[0]
    spy = emb._text.session = _SpySession(emb._text.session)
    got = emb.embed_texts(texts)
    longest = [int(np.flatnonzero(ids[i : i + 2].any(axis=0))[-1]) + 1 for i in (0, 2)]
    assert spy.shapes == [(2, longest[0]), (2, longest[1])] and longest[0] < 16
    assert np.abs(got - full).max() <= 1e-6


def test_bundle_without_the_flag_keeps_fixed_length(tiny_checkpoint, tmp_path):
    """An older bundle (no text.variable_length; its graph takes exactly context_length) keeps working."""
    import json

    from tests.bundle_fixtures import TINY_CONFIG, export_bundle

    old = export_bundle(
        tmp_path / "old",
        "--model-config",
        str(TINY_CONFIG),
        "--pretrained",
        str(tiny_checkpoint),
        "--fixed-length-text",
    )
    manifest = json.loads((old / "manifest.json").read_text())
    for key in ("variable_length", "variable_length_reason"):
        manifest["text"].pop(key)
    (old / "manifest.json").write_text(json.dumps(manifest))
    emb = load_bundle(old)
    assert not emb.variable_length
    spy = emb._text.session = _SpySession(emb._text.session)
    assert emb.embed_texts(["a cat", ""]).shape == (2, 32)
    assert spy.shapes == [(2, 16)]


def test_visual_session_is_created_in_the_background(tiny_bundle):
    """After the text tower is ready the visual session loads in a thread, without any image query."""
    emb = load_bundle(tiny_bundle, background_visual=True)
    assert emb.visual_ready.wait(60) and emb.visual_loaded and emb.visual_error is None
    assert "visual_load_s" in emb.timings
    assert emb.embed_images([Image.new("RGB", (8, 8))]).shape == (1, 32)
    lazy = load_bundle(tiny_bundle)
    assert not lazy.visual_ready.wait(0.2) and not lazy.visual_loaded


def test_background_visual_failure_is_reported_by_the_image_query(tiny_bundle, tmp_path):
    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    (copy / "visual.onnx").write_bytes(b"corrupt")
    emb = load_bundle(copy, background_visual=True, verify=False)
    for _ in range(600):
        if emb.visual_error is not None:
            break
        emb.visual_ready.wait(0.1)
    assert emb.visual_error is not None and not emb.visual_loaded
    assert emb.embed_texts(["ok"]).shape == (1, 32)
    with pytest.raises(Exception):  # noqa: B017
        emb.embed_images([Image.new("RGB", (8, 8))])


def test_verify_false_skips_checksums_of_a_local_bundle(tiny_bundle, tmp_path):
    """MODEL_VERIFY=off: a local bundle (verified when its image was built) is not hashed at start."""
    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    vocab = next(copy.glob("*.txt.gz"))
    entry = json.loads((copy / "manifest.json").read_text())["files"][vocab.name]
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"][vocab.name] = {**entry, "sha256": "0" * 64}  # a checksum that can never match
    manifest["files"]["textual.onnx"]["sha256"] = "0" * 64
    manifest["files"]["visual.onnx"]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="sha256"):
        load_bundle(copy)
    emb = load_bundle(copy, verify=False)
    assert emb.embed_texts(["ok"]).shape == (1, 32)
    assert emb.embed_images([Image.new("RGB", (8, 8))]).shape == (1, 32)


@pytest.mark.s3
def test_s3_download_is_verified_even_with_verify_false(tiny_bundle, s3_server, tmp_path):
    bucket = s3_server.make_bucket()
    client = s3_server.client()
    for f in tiny_bundle.iterdir():
        data = f.read_bytes()
        if f.name == "textual.onnx":  # same size, one byte flipped: only the sha256 can tell
            data = data[:-100] + bytes([data[-100] ^ 1]) + data[-99:]
        client.put_object(Bucket=bucket, Key=f"m/{f.name}", Body=data)
    with pytest.raises(ArtifactError, match=r"textual\.onnx.*sha256"):
        load_bundle(f"s3://{bucket}/m", verify=False, cache_dir=tmp_path / "cache")


def test_close_releases_sessions(tiny_bundle):
    emb = load_bundle(tiny_bundle, lazy_visual=False)
    assert emb.embed_texts(["a"]).shape[0] == 1
    emb.close()
    emb.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        emb.embed_texts(["a"])


def test_process_exit_with_live_sessions_is_clean(demo_bundle):
    """A process that exits while the background visual session is still being built, or with live
    sessions, exits 0: the visual thread is joined and an atexit hook releases the sessions before
    onnxruntime's environment is torn down (destroying them later aborted the process)."""
    code = (
        "import sys\n"
        "from handler.core.runtime import load_bundle\n"
        f"e = load_bundle({str(demo_bundle)!r}, background_visual=True)\n"
        "print(e.embed_texts(['a red circle']).shape, flush=True)\n"
    )
    for _ in range(3):
        res = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 0, res.stderr[-2000:]
        assert "terminate called" not in res.stderr


def test_background_work_runs_at_lower_priority():
    """The background visual load raises its thread's nice value, so it yields the cores to the text path."""
    import os
    import threading

    from handler.core.runtime import _lower_thread_priority

    seen: dict[str, int] = {}

    def work() -> None:
        tid = threading.get_native_id()
        seen["before"] = os.getpriority(os.PRIO_PROCESS, tid)
        _lower_thread_priority()
        seen["after"] = os.getpriority(os.PRIO_PROCESS, tid)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen["after"] == min(19, seen["before"] + 10)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == seen["before"]  # only that thread
