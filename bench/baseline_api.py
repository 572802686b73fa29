"""Baseline B, the "OpenCLIP embeddings API" design: open_clip in torch behind FastAPI ``POST /embeddings``.

    BASELINE_MODEL=ViT-B-32 BASELINE_PRETRAINED=/path/ckpt.pt [BASELINE_MODEL_CONFIG=cfg.json] \
        python -m uvicorn bench.baseline_api:app --port 8000

The model loads at import (the design loads it at start-up), requests take ``{"text": str | [str],
"image": base64 | [base64]}`` and return L2-normalised embeddings. Used by bench/coldstart/.
"""

from __future__ import annotations

import base64
import io
import os

import open_clip
import torch
from fastapi import FastAPI, HTTPException
from PIL import Image
from pydantic import BaseModel

MODEL = os.environ.get("BASELINE_MODEL", "ViT-B-32")
PRETRAINED = os.environ.get("BASELINE_PRETRAINED") or None
if os.environ.get("BASELINE_MODEL_CONFIG"):
    open_clip.add_model_config(os.environ["BASELINE_MODEL_CONFIG"])
if os.environ.get("BASELINE_THREADS"):
    torch.set_num_threads(int(os.environ["BASELINE_THREADS"]))

model, _, preprocess = open_clip.create_model_and_transforms(MODEL, pretrained=PRETRAINED)
model.eval()
tokenizer = open_clip.get_tokenizer(MODEL)

app = FastAPI(title="OpenCLIP embeddings API (baseline B)")


class EmbeddingsRequest(BaseModel):
    text: str | list[str] | None = None
    image: str | list[str] | None = None


@app.post("/embeddings")
def embeddings(req: EmbeddingsRequest) -> dict:
    out: dict = {"model": MODEL}
    with torch.inference_mode():
        if req.text is not None:
            texts = [req.text] if isinstance(req.text, str) else req.text
            out["text_embeddings"] = model.encode_text(tokenizer(texts), normalize=True).tolist()
        if req.image is not None:
            images = [req.image] if isinstance(req.image, str) else req.image
            try:
                pixels = torch.stack(
                    [preprocess(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")) for b in images]
                )
            except Exception as exc:  # the design answers any bad image with a 400
                raise HTTPException(400, f"bad image: {exc}") from exc
            out["image_embeddings"] = model.encode_image(pixels, normalize=True).tolist()
    if len(out) == 1:
        raise HTTPException(400, "give text and/or image")
    return out


@app.get("/health")
def health() -> dict:
    return {"ok": True}
