"""Accuracy cost of fp16 and int8: cosine to fp32 and top-10 overlap of search results.

Two models: the demo model on real demo images and captions (also: text -> image precision@10 by class,
i.e. does the variant still find the right shapes), and the random-init ViT-B-32 on the same images.
All through the runtime (``load_bundle(precision=...)``), fp32 ONNX as the reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.common import Context, DemoUnavailable, Section, demo_bundle, export_bundle, table

TEMPLATES = (
    "a {colour} {shape}",
    "{colour} {shape}",
    "the {colour} {shape}",
    "a photo of a {colour} {shape}",
    "an image of a {colour} {shape}",
)


def overlap(q_ref: np.ndarray, g_ref: np.ndarray, q: np.ndarray, g: np.ndarray, k: int = 10) -> np.ndarray:
    top_ref = np.argsort(-(q_ref @ g_ref.T), axis=1)[:, :k]
    top = np.argsort(-(q @ g.T), axis=1)[:, :k]
    return np.array([len(set(a) & set(b)) / k for a, b in zip(top_ref, top, strict=True)])


def precision_at_k(q: np.ndarray, g: np.ndarray, q_labels: list, g_labels: list, k: int = 10) -> float:
    top = np.argsort(-(q @ g.T), axis=1)[:, :k]
    return float(np.mean([[g_labels[j] == q_labels[i] for j in row] for i, row in enumerate(top)]))


def evaluate(
    bundle: Any,
    precisions: list[str],
    texts: list[str],
    t_labels: list,
    images: list,
    i_labels: list,
    q_images: list,
    ctx: Context,
) -> dict[str, Any]:
    from handler.core.runtime import load_bundle

    emb = {}
    for p in precisions:
        e = load_bundle(bundle, precision=p, threads=ctx.threads, lazy_visual=False)
        emb[p] = {
            "text": e.embed_texts(texts),
            "gallery": e.embed_images(images),
            "qimg": e.embed_images(q_images),
        }
        ctx.log(f"{bundle.name} {p}: embedded {len(texts)} texts, {len(images) + len(q_images)} images")
        del e
    ref = emb["fp32"]
    out = {}
    for p in precisions:
        v = emb[p]
        ct = np.sum(ref["text"] * v["text"], axis=1)
        ci = np.sum(
            np.concatenate([ref["gallery"], ref["qimg"]]) * np.concatenate([v["gallery"], v["qimg"]]), 1
        )
        ot = overlap(ref["text"], ref["gallery"], v["text"], v["gallery"])
        oi = overlap(ref["qimg"], ref["gallery"], v["qimg"], v["gallery"])
        out[p] = {
            "text_cos_min": float(ct.min()),
            "text_cos_mean": float(ct.mean()),
            "image_cos_min": float(ci.min()),
            "image_cos_mean": float(ci.mean()),
            "top10_text": float(ot.mean()),
            "top10_image": float(oi.mean()),
            "p_at_10": precision_at_k(v["text"], v["gallery"], t_labels, i_labels),
        }
    return out


def run(ctx: Context) -> Section:
    from demo.shapes import CLASSES, sample

    sec = Section("accuracy", "Accuracy cost of fp16 and int8")
    n_gal, n_q = (200, 20) if ctx.quick else (1000, 100)
    gallery = sample(n_gal, seed=4242, size=64)
    queries = sample(n_q, seed=4343, size=64)
    texts = [t.format(colour=c, shape=s) for c, s in CLASSES for t in TEMPLATES]
    t_labels = [(c, s) for c, s in CLASSES for _ in TEMPLATES]
    images = [im for im, _, _ in gallery]
    i_labels = [(c, s) for _, c, s in gallery]
    q_images = [im for im, _, _ in queries]
    precisions = ["fp32", "fp16", "int8"]
    results = {}
    trained = False
    try:
        demo_path, trained = demo_bundle(ctx, precisions=precisions)
        results["demo"] = evaluate(demo_path, precisions, texts, t_labels, images, i_labels, q_images, ctx)
    except DemoUnavailable as exc:
        sec.add(f"**Demo model rows skipped:** {exc}")
    # the big model on a subset (fp16 on CPU is slow)
    nv = 60 if ctx.quick else 300
    big = export_bundle(ctx, precisions=precisions)
    results["vitb32"] = evaluate(
        big, precisions, texts[::2], t_labels[::2], images[:nv], i_labels[:nv], q_images[: nv // 10], ctx
    )
    rows = []
    names = {
        "demo": "demo model" + ("" if trained else " (**random init**: checkpoint missing)"),
        "vitb32": f"{ctx.model_name} random init",
    }
    for key, res in results.items():
        for p in precisions[1:]:
            r = res[p]
            rows.append(
                [
                    names[key],
                    p,
                    f"{r['text_cos_min']:.5f} / {r['text_cos_mean']:.5f}",
                    f"{r['image_cos_min']:.5f} / {r['image_cos_mean']:.5f}",
                    f"{r['top10_text']:.3f}",
                    f"{r['top10_image']:.3f}",
                    f"{r['p_at_10']:.3f} (fp32 {res['fp32']['p_at_10']:.3f})",
                ]
            )
    sec.add(
        f"Gallery: {n_gal} demo images (64 px, demo.shapes, seed 4242; {nv} of them for the bigger model); "
        f"queries: {len(texts)} captions (32 classes × {len(TEMPLATES)} phrasings; every other one for the "
        f"bigger model) and {n_q} held-out images. Reference: the fp32 ONNX bundle. Top-10 overlap = "
        "|top-10(variant) ∩ top-10(fp32)| / 10 over the gallery, averaged over queries. P@10 = share of a "
        "caption's top-10 images showing that caption's class (meaningful for the trained demo model only).",
        table(
            [
                "Model",
                "precision",
                "text cosine min / mean",
                "image cosine min / mean",
                "top-10 overlap (text q)",
                "top-10 overlap (image q)",
                "text→image P@10",
            ],
            rows,
            align="llrrrrr",
        ),
        "A random-init tower maps every input to nearly the same direction, so its top-10 lists are decided "
        "by tiny score differences: overlap there is a worst case for rounding, not a quality measure.",
    )
    sec.data["results"] = results
    sec.data["trained_demo"] = trained
    return sec
