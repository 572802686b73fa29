"""Train the tiny demo CLIP on freshly sampled synthetic shapes (CPU, a few minutes).

    python -m demo.train --out demo/model/demo-clip.pt [--seconds 150] [--steps N] [--seed 0]

Uses open_clip end to end: the model comes from ``create_model_and_transforms("demo-clip")`` (config
``demo/model/demo-clip.json``), images go through open_clip's own train transform (its inference
transform for evaluation), captions through ``get_tokenizer("demo-clip")``, the loss is open_clip's
``ClipLoss``. Each batch holds distinct classes (a shuffled cycle over all colour x shape classes), so
the contrastive targets are never contradicted by a duplicate caption in the batch.

Training stops at --steps or --seconds, whichever comes first. With --steps the learning-rate schedule
follows the step count and the run is deterministic (same machine / torch build); with only --seconds the
schedule follows wall time. The checkpoint is a plain state_dict saved in fp16 (to stay under 10 MB);
``open_clip.create_model_and_transforms("demo-clip", pretrained=PATH)`` loads it into fp32 parameters.
After saving, the checkpoint is re-loaded from disk and evaluated on a held-out set (a different seed).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from PIL import Image

from demo import CHECKPOINT_PATH, MODEL_NAME
from demo.evaluate import evaluate
from demo.shapes import CLASSES, render, sample
from demo.torch_model import load_model, register_model_config, torch_embedders

#: Held-out evaluation seed; training draws from `--seed` streams and never uses this one.
EVAL_SEED = 1_000_003

#: Caption variants used (besides the canonical "a {colour} {shape}") so free-form queries such as
#: "red circle" or "a photo of a red circle" also work in the demo.
TEMPLATES: tuple[str, ...] = (
    "{colour} {shape}",
    "the {colour} {shape}",
    "a photo of a {colour} {shape}",
    "an image of a {colour} {shape}",
    "a {colour} {shape} on a background",
)
RENDER_SIZES: tuple[int, ...] = (64, 64, 96, 128)


def class_stream(rng: np.random.Generator) -> Iterator[tuple[str, str]]:
    """Endless stream of classes: consecutive shuffled permutations of CLASSES."""
    while True:
        for i in rng.permutation(len(CLASSES)):
            yield CLASSES[int(i)]


def make_text(colour: str, shape: str, rng: np.random.Generator, template_prob: float) -> str:
    if rng.random() < template_prob:
        template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        return template.format(colour=colour, shape=shape)
    return f"a {colour} {shape}"


def make_image(colour: str, shape: str, rng: np.random.Generator, jpeg_prob: float) -> Image.Image:
    """A training image at a random render size, sometimes JPEG round-tripped (like indexed files)."""
    size = RENDER_SIZES[int(rng.integers(len(RENDER_SIZES)))]
    img = render(colour, shape, rng, size)
    if rng.random() < jpeg_prob:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(70, 96)))
        buf.seek(0)
        img = Image.open(buf).convert("RGB")
    return img


def lr_at(progress: float, base_lr: float, warmup: float) -> float:
    """Linear warmup over the first `warmup` fraction, then cosine decay to 0 (progress in [0, 1])."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return base_lr * progress / warmup
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * (progress - warmup) / (1.0 - warmup)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's convention: no weight decay on gains, biases, norms, embeddings' 1-D params, logit_scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def save_checkpoint(model: torch.nn.Module, path: Path, fp16: bool = True) -> None:
    """Save the state_dict (floating tensors in fp16 unless `fp16=False`)."""
    state = {
        k: (v.detach().to(torch.float16) if fp16 and v.is_floating_point() else v.detach()).clone()
        for k, v in model.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def evaluate_checkpoint(path: Path | str, per_class: int = 8, seed: int = EVAL_SEED) -> dict[str, Any]:
    """Metrics of a saved checkpoint on held-out sets at 64 px (native) and 128 px JPEG (like indexed files)."""
    model, preprocess, tokenizer = load_model(path)
    embed_text, embed_image = torch_embedders(model, preprocess, tokenizer)
    results: dict[str, Any] = {}
    items64 = sample(per_class * len(CLASSES), seed=seed, size=64)
    images, labels = [i for i, _, _ in items64], [(c, s) for _, c, s in items64]
    results["heldout_64px"] = evaluate(embed_text, embed_image, images, labels)
    items = sample(per_class * len(CLASSES), seed=seed + 1, size=128)
    jpegs = []
    for img, _, _ in items:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=92)
        buf.seek(0)
        jpegs.append(Image.open(buf).convert("RGB"))
    results["heldout_128px_jpeg"] = evaluate(embed_text, embed_image, jpegs, [(c, s) for _, c, s in items])
    # free-form query variants against the 64 px set: zero-shot accuracy per template
    image_emb = embed_image(images)
    truth = np.array([CLASSES.index(lab) for lab in labels])
    per_template = {}
    for template in TEMPLATES:
        text_emb = embed_text([template.format(colour=c, shape=s) for c, s in CLASSES])
        per_template[template] = float(np.mean(np.argmax(image_emb @ text_emb.T, axis=1) == truth))
    results["zero_shot_accuracy_by_template"] = per_template
    return results


def quick_eval(model: torch.nn.Module, tokenizer: Any, preprocess: Any, per_class: int = 4) -> dict[str, Any]:
    """In-training progress check on a small held-out set (64 px)."""
    was_training = model.training
    model.eval()
    embed_text, embed_image = torch_embedders(model, preprocess, tokenizer)
    items = sample(per_class * len(CLASSES), seed=EVAL_SEED, size=64)
    res = evaluate(embed_text, embed_image, [i for i, _, _ in items], [(c, s) for _, c, s in items], k=3)
    model.train(was_training)
    print(
        f"  eval: zero-shot {res['zero_shot_accuracy']:.3f}  t2i@1 {res['text_to_image_precision_at_1']:.3f}  "
        f"i2i@3 {res['image_query_precision_at_3']:.3f}",
        flush=True,
    )
    return res


def train(
    out: Path,
    seconds: float | None = 150.0,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 2e-3,
    weight_decay: float = 0.1,
    warmup: float = 0.05,
    template_prob: float = 0.3,
    jpeg_prob: float = 0.3,
    threads: int = 2,
    log_every: int = 50,
    eval_every: int = 0,
    eval_per_class: int = 8,
    fp16: bool = True,
) -> dict[str, Any]:
    if seconds is None and steps is None:
        raise ValueError("give --seconds and/or --steps")
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    register_model_config()
    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(MODEL_NAME)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    model.train()
    loss_fn = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model {MODEL_NAME}: {n_params / 1e6:.2f}M params; batch {batch_size}; "
        f"stop at {steps} steps / {seconds} s; lr {lr}",
        flush=True,
    )

    classes = class_stream(rng)
    start = time.perf_counter()
    step = 0
    running = 0.0
    while True:
        elapsed = time.perf_counter() - start
        if (steps is not None and step >= steps) or (seconds is not None and elapsed >= seconds):
            break
        progress = step / steps if steps is not None else elapsed / float(seconds)  # type: ignore[arg-type]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(progress, lr, warmup)

        batch = [next(classes) for _ in range(batch_size)]
        images = torch.stack([preprocess_train(make_image(c, s, rng, jpeg_prob)) for c, s in batch])
        texts = tokenizer([make_text(c, s, rng, template_prob) for c, s in batch])
        image_features, text_features, logit_scale = model(images, texts)
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        running += loss.item()
        if step % log_every == 0:
            print(
                f"step {step:5d}  {time.perf_counter() - start:6.1f}s  loss {running / log_every:.4f}  "
                f"logit_scale {model.logit_scale.exp().item():.1f}  lr {optimizer.param_groups[0]['lr']:.2e}",
                flush=True,
            )
            running = 0.0
        if eval_every and step % eval_every == 0:
            quick_eval(model, tokenizer, preprocess_val)
    train_seconds = time.perf_counter() - start

    save_checkpoint(model, out, fp16=fp16)
    size = out.stat().st_size
    print(f"trained {step} steps in {train_seconds:.1f}s; saved {out} ({size / 1e6:.2f} MB)", flush=True)
    metrics = evaluate_checkpoint(out, per_class=eval_per_class)
    summary = {"steps": step, "train_seconds": round(train_seconds, 1), "checkpoint_bytes": size, **metrics}
    print(json.dumps(summary, indent=2), flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo.train", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out", type=Path, default=CHECKPOINT_PATH, help=f"checkpoint path (default {CHECKPOINT_PATH})"
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="wall-clock training budget (default 150 when --steps is not given)",
    )
    p.add_argument("--steps", type=int, default=None, help="number of optimizer steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup", type=float, default=0.05, help="warmup fraction of the schedule")
    p.add_argument("--template-prob", type=float, default=0.3, help="probability of a caption variant")
    p.add_argument("--jpeg-prob", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=0, help="quick held-out eval every N steps (0: off)")
    p.add_argument(
        "--eval-per-class",
        type=int,
        default=8,
        help="held-out images per class for the final evaluation (default 8)",
    )
    p.add_argument("--fp32", action="store_true", help="save fp32 tensors (checkpoint > 10 MB)")
    a = p.parse_args(argv)
    seconds = a.seconds if a.seconds is not None else (None if a.steps is not None else 150.0)
    train(
        a.out,
        seconds=seconds,
        steps=a.steps,
        seed=a.seed,
        batch_size=a.batch_size,
        lr=a.lr,
        weight_decay=a.weight_decay,
        warmup=a.warmup,
        template_prob=a.template_prob,
        jpeg_prob=a.jpeg_prob,
        threads=a.threads,
        log_every=a.log_every,
        eval_every=a.eval_every,
        eval_per_class=a.eval_per_class,
        fp16=not a.fp32,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
