"""Cheap-to-send, expensive-to-decode images: per-request pixel budget and aspect-ratio cap in the service,
checked on the headers before anything is decoded."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from PIL import Image

from tests.handler.conftest import make_client, make_settings
from tests.handler.img_samples import png_header_only


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (90, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


def _error(r: Any) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


def test_request_pixel_budget_checked_before_decoding(demo_client: Any) -> None:
    # 49 MP each, a few hundred bytes, garbage pixel data: decoding any of them would answer invalid_image
    bomb = _b64(png_header_only(7000, 7000))
    r = demo_client.post("/embeddings", json={"image": [bomb, bomb, bomb]})
    assert _error(r) == (413, "too_many_pixels"), r.text
    assert "147000000 pixels" in r.json()["error"]["message"] and "100000000" in r.json()["error"]["message"]
    r = demo_client.post(
        "/embeddings", json={"image": [bomb, bomb]}
    )  # within the budget: decoded, and corrupt
    assert _error(r) == (400, "invalid_image"), r.text


def test_aspect_ratio_cap_in_the_service(demo_client: Any) -> None:
    thin = png_header_only(1, 40_000_000)  # the 155 KB / 1.9 s / 460 MB image of the report, header only
    r = demo_client.post("/search", content=thin, headers={"content-type": "image/png"})
    assert _error(r) == (413, "aspect_ratio_too_large"), r.text
    r = demo_client.post("/embeddings", json={"image": [_b64(_png(8, 8)), _b64(thin)]})
    assert _error(r) == (413, "aspect_ratio_too_large")
    assert r.json()["error"]["message"].startswith("image[1]: ")


def test_configured_request_pixel_budget(demo_bundle: Path, demo_index: tuple[Path, Path]) -> None:
    client = make_client(make_settings(demo_bundle, demo_index[0], MAX_REQUEST_PIXELS=25_000))
    small = _b64(_png(100, 100))
    r = client.post("/embeddings", json={"image": [small, small]})
    assert r.status_code == 200 and len(r.json()["image_embeddings"]) == 2
    r = client.post("/embeddings", json={"image": [small, small, small]})
    assert _error(r) == (413, "too_many_pixels")
    r = client.post("/search", content=_png(200, 200), headers={"content-type": "image/png"})
    assert _error(r) == (413, "too_many_pixels")
    assert client.get("/info").json()["parameters"]["max_request_pixels"] == 25_000
