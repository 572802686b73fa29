"""Builder and service agree on images: one pixel limit, transparency composited the same way (recorded in
the index manifest), old indexes without the record served as before."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from handler.core.images import DEFAULT_MAX_PIXELS, LEGACY_OPTIONS
from tests.handler.conftest import make_client, make_settings, write_index
from tests.index_builder.conftest import build_args, read_version, vectors_by_id


def _post_image(client: Any, data: bytes, k: int = 3) -> Any:
    return client.post(f"/search?k={k}", content=data, headers={"content-type": "image/png"})


def test_45mp_image_indexed_queried_and_thumbnailed_with_default_settings(
    demo_bundle: Path, tmp_path: Path, cli
) -> None:
    """Builder, query and thumbnail share one pixel limit: a 45 MP photo is indexed, can be the query and
    has a thumbnail (before: builder 50 MP, service 40 MP -> 413 for the query, 503 for the thumbnail)."""
    assert DEFAULT_MAX_PIXELS >= 45_000_000
    src = tmp_path / "photos"
    src.mkdir()
    big = Image.new("L", (7500, 6000), 90)  # mostly uniform: cheap to write, 45 MP to decode
    ImageDraw.Draw(big).ellipse((2000, 1500, 5500, 4500), fill=220)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=80)
    data = buf.getvalue()
    (src / "big.jpg").write_bytes(data)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(src / "small.png")
    dest = tmp_path / "index"
    res = cli(*build_args(src, demo_bundle, dest))
    assert res.rc == 0, res.err
    version = read_version(dest)
    assert version["errors"] == []
    row = next(r for r in version["items"] if r["id"] == "big.jpg")
    assert (row["width"], row["height"]) == (7500, 6000)  # the full size, though decoded at reduced scale

    client = make_client(make_settings(demo_bundle, dest))
    r = client.post("/search?k=1", content=data, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"]["width"] == 7500 and body["query"]["height"] == 6000
    assert body["results"][0]["id"] == "big.jpg" and body["results"][0]["score"] > 0.9999
    thumb = client.get("/items/big.jpg/thumbnail")
    assert thumb.status_code == 200, thumb.text
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 256


def _icons(folder: Path) -> dict[str, bytes]:
    """Black glyphs on a fully transparent background (stored colour black): RGBA, LA and palette files."""
    folder.mkdir()
    shapes = {
        "circle": lambda d: d.ellipse((16, 16, 80, 80), fill=(0, 0, 0, 255)),
        "square": lambda d: d.rectangle((20, 20, 76, 76), fill=(0, 0, 0, 255)),
        "triangle": lambda d: d.polygon([(48, 10), (86, 84), (10, 84)], fill=(0, 0, 0, 255)),
        "bar": lambda d: d.rectangle((8, 40, 88, 56), fill=(0, 0, 0, 255)),
        "ring": lambda d: d.ellipse((10, 10, 86, 86), outline=(0, 0, 0, 255), width=8),
        "cross": lambda d: (
            d.rectangle((42, 8, 54, 88), fill=(0, 0, 0, 255)),
            d.rectangle((8, 42, 88, 54), fill=(0, 0, 0, 255)),
        ),
    }
    files: dict[str, bytes] = {}
    for name, draw in shapes.items():
        img = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
        draw(ImageDraw.Draw(img))
        for suffix, converted, fmt in (("png", img, "PNG"), ("la.png", img.convert("LA"), "PNG")):
            buf = io.BytesIO()
            converted.save(buf, fmt)
            files[f"{name}.{suffix}"] = buf.getvalue()
    gif = Image.new("P", (96, 96), 0)
    gif.putpalette([0, 0, 0] * 256)
    ImageDraw.Draw(gif).polygon([(48, 6), (90, 48), (48, 90), (6, 48)], fill=1)
    buf = io.BytesIO()
    gif.save(buf, "GIF", transparency=0)
    files["diamond.gif"] = buf.getvalue()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def test_transparent_icons_distinct_and_same_vector_in_builder_and_service(
    demo_bundle: Path, tmp_path: Path, cli
) -> None:
    from handler.core.preprocess import ImagePreprocessor
    from handler.core.runtime import load_bundle

    files = _icons(tmp_path / "icons")
    dest = tmp_path / "index"
    res = cli(*build_args(tmp_path / "icons", demo_bundle, dest))
    assert res.rc == 0, res.err
    version = read_version(dest)
    assert version["manifest"]["image_preprocess"] == {"background": "#ffffff", "jpeg_draft": True}
    vectors = vectors_by_id(version)
    assert set(vectors) == set(files)

    # different shapes, different vectors (alpha dropped, every one was the same all-black image)
    shapes = [*sorted(n for n in files if n.endswith(".png") and not n.endswith(".la.png")), "diamond.gif"]
    mat = np.stack([vectors[n] for n in shapes])
    sims = mat @ mat.T
    assert float(sims[~np.eye(len(shapes), dtype=bool)].max()) < 0.9999, sims
    emb = load_bundle(demo_bundle, threads=2)
    legacy = ImagePreprocessor(emb.bundle.manifest["image"], background=None)
    dropped = emb.embed_pixels(np.stack([legacy(files[n]) for n in shapes]))
    assert float((dropped @ dropped.T).min()) > 0.99999  # the bug this fixes: one vector for all

    # the service prepares queries as the index says: the same vector for the same file
    client = make_client(make_settings(demo_bundle, dest))
    names = sorted(files)

    r = client.post("/embeddings", json={"image": [base64.b64encode(files[n]).decode() for n in names]})
    assert r.status_code == 200, r.text
    served = np.asarray(r.json()["image_embeddings"], dtype=np.float32)
    for name, vec in zip(names, served, strict=True):
        assert float(vec @ vectors[name]) > 0.99999, name
    r = _post_image(client, files["triangle.png"], k=1)
    assert r.status_code == 200 and r.json()["results"][0]["score"] > 0.99999
    assert r.json()["results"][0]["id"] in ("triangle.png", "triangle.la.png")
    # thumbnails: composited over the same background (a JPEG, white where the icon is transparent)
    thumb = client.get("/items/circle.png/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    shown = Image.open(io.BytesIO(thumb.content)).convert("RGB")
    assert min(shown.getpixel((1, 1))) > 240 and max(shown.getpixel((48, 48))) < 15


def test_index_without_image_record_served_as_before_and_rebuilt_with_background(
    demo_bundle: Path, tmp_path: Path, cli
) -> None:
    """An index written before ``image_preprocess`` existed keeps its meaning (alpha dropped, JPEGs at
    full size); the next build re-embeds everything with the new default instead of reusing vectors."""
    import hashlib

    from handler.core.runtime import load_bundle

    files = _icons(tmp_path / "icons")
    emb = load_bundle(demo_bundle, threads=2)
    names = sorted(files)
    old = emb.embed_pixels(np.stack([emb.preprocess(files[n], LEGACY_OPTIONS) for n in names]))
    items = [
        {
            "id": n,
            "uri": str(tmp_path / "icons" / n),
            "size": len(files[n]),
            "sha256": hashlib.sha256(files[n]).hexdigest(),
            "width": 96,
            "height": 96,
        }
        for n in names
    ]
    dest = tmp_path / "index"
    manifest = write_index(dest, emb, items, old, "v0001", str(tmp_path / "icons"))
    assert "image_preprocess" not in manifest

    client = make_client(make_settings(demo_bundle, dest))
    r = _post_image(client, files["square.png"], k=len(names))
    assert r.status_code == 200, r.text
    scores = {h["id"]: h["score"] for h in r.json()["results"]}
    assert scores["square.png"] > 0.99999 and scores["circle.png"] > 0.99999  # the old (collapsed) vectors
    thumb = client.get("/items/circle.png/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"  # alpha kept, as before

    res = cli(*build_args(tmp_path / "icons", demo_bundle, dest))
    assert res.rc == 0, res.err
    version = read_version(dest)
    assert version["manifest"]["image_preprocess"]["background"] == "#ffffff"
    assert version["manifest"]["stats"]["embedded"] == len(names), version["manifest"]["stats"]
    new = vectors_by_id(version)
    assert float(new["square.png"] @ new["circle.png"]) < 0.9999


@pytest.mark.parametrize("background", ["black", "#336699", "none"])
def test_background_option_recorded_and_followed(
    demo_bundle: Path, tmp_path: Path, cli, background: str
) -> None:
    from handler.core.images import ImageOptions, parse_background

    files = _icons(tmp_path / "icons")
    dest = tmp_path / "index"
    res = cli(*build_args(tmp_path / "icons", demo_bundle, dest, "--background", background))
    assert res.rc == 0, res.err
    version = read_version(dest)
    options = ImageOptions.from_manifest(version["manifest"]["image_preprocess"])
    assert options.background == parse_background(background)
    client = make_client(make_settings(demo_bundle, dest))
    r = _post_image(client, files["ring.png"], k=1)
    assert r.status_code == 200 and r.json()["results"][0]["score"] > 0.99999
    # the recorded colour is the one used: a white-background vector of the same file differs
    from handler.core.runtime import load_bundle

    white = load_bundle(demo_bundle, threads=2).embed_images([files["ring.png"]])[0]
    assert float(white @ vectors_by_id(version)["ring.png"]) < 0.9999


def test_background_usage_error(demo_bundle: Path, tmp_path: Path, cli) -> None:
    res = cli(*build_args(tmp_path, demo_bundle, tmp_path / "index", "--background", "mauve"))
    assert res.rc == 2 and "--background" in res.err and "not a colour" in res.err
