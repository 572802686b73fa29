"""PyTorch-vs-ONNX parity and precision-variant accuracy, measured on fixed inputs at export time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image, ImageDraw

from handler.core.bundle import IO
from handler.core.encoders import create_session
from handler.core.encoders import trim_padding as runtime_trim

FP32_MAX_ABS = 1e-5
# A variable-length text graph on ids trimmed like the runtime trims them vs the same graph untrimmed.
TRIM_MAX_ABS = 1e-6
# Minimum accuracy of a precision variant against fp32 on the fixed query set; export fails below.
VARIANT_THRESHOLDS = {
    "fp16": {"cosine_min": 0.995, "top10_overlap": 0.8},
    "int8": {"cosine_min": 0.90, "top10_overlap": 0.5},
}

PARITY_TEXTS = [
    "",
    "a photo of a cat",
    "A RED CIRCLE on a white background",
    "日本語のテキストと中文字符",
    "café naïve résumé façade",
    "emoji 🐱🚀👍🏽 👨‍👩‍👧",
    "HTML &amp; entities &lt;b&gt; &#39;quoted&#39;",
    "   tabs\tand\nnewlines   and  spaces ",
    "!!!???...,,,;;;",
    " ".join(["over-long text that is truncated"] * 30),
]


def parity_images(seed: int = 0) -> list[Image.Image]:
    """Deterministic images at several sizes and aspect ratios (noise, gradients, shapes)."""
    rng = np.random.default_rng(seed)
    images = []
    for i, (w, h) in enumerate([(224, 224), (320, 240), (97, 300), (640, 480), (33, 33), (512, 128)]):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx / max(w - 1, 1), yy / max(h - 1, 1), (xx + yy) / max(w + h - 2, 1)], -1) * 255
        noise = rng.normal(0, 25, size=(h, w, 3))
        arr = np.clip(base * (i % 3 + 1) / 3 + noise, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "RGB")
        draw = ImageDraw.Draw(img)
        x0, y0 = rng.integers(0, max(w // 2, 1)), rng.integers(0, max(h // 2, 1))
        draw.ellipse([x0, y0, x0 + w // 3, y0 + h // 3], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        images.append(img)
    return images


def query_set(seed: int = 1, n_images: int = 48) -> tuple[list[str], list[Image.Image]]:
    """A fixed gallery and text queries for top-10 overlap of precision variants."""
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
    shapes = ["circle", "square", "triangle", "star"]
    texts = [f"a {c} {s}" for c in colours for s in shapes][:16]
    rng = np.random.default_rng(seed)
    gallery = []
    for _ in range(n_images):
        w, h = (int(x) for x in rng.integers(64, 300, 2))
        arr = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        img = Image.fromarray(arr, "RGB")
        draw = ImageDraw.Draw(img)
        draw.rectangle(
            [w // 4, h // 4, 3 * w // 4, 3 * h // 4], fill=tuple(int(c) for c in rng.integers(0, 255, 3))
        )
        gallery.append(img)
    return texts, gallery


def session(path: Path, precision: str = "fp32") -> ort.InferenceSession:
    return create_session(path, precision)


def run_onnx(sess: ort.InferenceSession, tower: str, x: np.ndarray, batch_size: int) -> np.ndarray:
    in_name = IO[tower]["input"]["name"]
    outs = [sess.run(None, {in_name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(outs).astype(np.float32)


def torch_inputs(
    loaded: Any, texts: list[str], images: list[Image.Image]
) -> tuple[torch.Tensor, torch.Tensor]:
    ids = loaded.tokenizer(texts)
    pixels = torch.stack([loaded.preprocess(img) for img in images])
    return ids, pixels


def torch_embeddings(loaded: Any, ids: torch.Tensor, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    model = loaded.model
    with torch.no_grad():
        t = model.encode_text(ids.to(loaded.device), normalize=True).float().cpu().numpy()
        v = model.encode_image(pixels.to(loaded.device), normalize=True).float().cpu().numpy()
    return t, v


def measure_parity(
    loaded: Any,
    paths: dict[str, Path],
    batch_sizes: tuple[int, ...] = (1, 3),
    trim_padding: bool = False,
    pad_id: int = 0,
) -> dict[str, Any]:
    """fp32 ONNX vs PyTorch on the fixed texts and images, at each batch size.

    With ``trim_padding`` (a variable-length text graph) the text graph also runs on ids trimmed like the
    runtime trims them (each batch to its longest text): trimmed and untrimmed must both be within
    FP32_MAX_ABS of PyTorch, and within TRIM_MAX_ABS of each other."""
    ids, pixels = torch_inputs(loaded, PARITY_TEXTS, parity_images())
    ref_t, ref_v = torch_embeddings(loaded, ids, pixels)
    text_sess, vis_sess = session(paths["textual"]), session(paths["visual"])
    ids_np, pix_np = ids.numpy().astype(np.int64), pixels.numpy().astype(np.float32)
    in_name = IO["textual"]["input"]["name"]
    per_batch = {}
    worst_t = worst_v = worst_trim = 0.0
    for bs in batch_sizes:
        full = run_onnx(text_sess, "textual", ids_np, bs)
        dt = float(np.abs(full - ref_t).max())
        row: dict[str, float] = {}
        if trim_padding:
            # the runtime's own trimming, on each batch
            trimmed = np.concatenate(
                [
                    text_sess.run(None, {in_name: runtime_trim(ids_np[i : i + bs], pad_id)})[0]
                    for i in range(0, len(ids_np), bs)
                ]
            ).astype(np.float32)
            row["text_trimmed_max_abs"] = float(np.abs(trimmed - ref_t).max())
            row["trimmed_vs_untrimmed_max_abs"] = float(np.abs(trimmed - full).max())
            dt = max(dt, row["text_trimmed_max_abs"])
            worst_trim = max(worst_trim, row["trimmed_vs_untrimmed_max_abs"])
        dv = float(np.abs(run_onnx(vis_sess, "visual", pix_np, bs) - ref_v).max())
        per_batch[str(bs)] = {"text_max_abs": dt, "image_max_abs": dv, **row}
        worst_t, worst_v = max(worst_t, dt), max(worst_v, dv)
    result = {
        "device": loaded.device,
        "threshold": FP32_MAX_ABS,
        "text_max_abs": worst_t,
        "image_max_abs": worst_v,
        "batch_sizes": per_batch,
        "n_texts": len(PARITY_TEXTS),
        "n_images": len(pixels),
        "passed": worst_t <= FP32_MAX_ABS and worst_v <= FP32_MAX_ABS,
    }
    if trim_padding:
        result.update(trimmed=True, trim_threshold=TRIM_MAX_ABS, trimmed_vs_untrimmed_max_abs=worst_trim)
        result["passed"] = result["passed"] and worst_trim <= TRIM_MAX_ABS
    return result


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def _top10_overlap(q_ref: np.ndarray, g_ref: np.ndarray, q: np.ndarray, g: np.ndarray) -> float:
    k = min(10, len(g_ref))
    top_ref = np.argsort(-(q_ref @ g_ref.T), axis=1)[:, :k]
    top = np.argsort(-(q @ g.T), axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_ref, top, strict=True)]))


def measure_variant(
    loaded: Any, fp32: dict[str, Path], variant: dict[str, Path], precision: str
) -> dict[str, Any]:
    """Accuracy of a precision variant against the fp32 ONNX model: cosine min/mean, top-10 overlap."""
    texts, gallery = query_set()
    ids, pixels = torch_inputs(loaded, PARITY_TEXTS + texts, parity_images() + gallery)
    ids_np, pix_np = ids.numpy().astype(np.int64), pixels.numpy().astype(np.float32)
    ref_t = run_onnx(session(fp32["textual"]), "textual", ids_np, 16)
    ref_v = run_onnx(session(fp32["visual"]), "visual", pix_np, 16)
    var_t = run_onnx(session(variant["textual"], precision), "textual", ids_np, 16)
    var_v = run_onnx(session(variant["visual"], precision), "visual", pix_np, 16)
    ct, cv = _cosines(ref_t, var_t), _cosines(ref_v, var_v)
    nq, ng = len(texts), len(gallery)
    overlap_text = _top10_overlap(ref_t[-nq:], ref_v[-ng:], var_t[-nq:], var_v[-ng:])
    overlap_image = _top10_overlap(ref_v[-ng:][:16], ref_v[-ng:], var_v[-ng:][:16], var_v[-ng:])
    thresholds = VARIANT_THRESHOLDS[precision]
    result = {
        "text": {"cosine_min": float(ct.min()), "cosine_mean": float(ct.mean())},
        "image": {"cosine_min": float(cv.min()), "cosine_mean": float(cv.mean())},
        "top10_overlap": min(overlap_text, overlap_image),
        "top10_overlap_text_to_image": overlap_text,
        "top10_overlap_image_to_image": overlap_image,
        "thresholds": thresholds,
    }
    result["passed"] = (
        min(result["text"]["cosine_min"], result["image"]["cosine_min"]) >= thresholds["cosine_min"]
        and result["top10_overlap"] >= thresholds["top10_overlap"]
    )
    return result
