"""index_builder.facts: EXIF date / camera / GPS, type, ext, mtime fallback - and the builder writing them
into items.jsonl, carrying them with reused vectors, and filling them in rows of an older builder."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from index_builder.facts import content_facts, previous_content, row_facts
from tests.index_builder.conftest import build_args, read_version


def exif_jpeg(
    taken: str | None = "2021:07:14 09:30:05",
    camera: tuple[str, str] | None = ("Canon", "Canon EOS 5D"),
    gps: bool = True,
    offset: str | None = None,
    size: tuple[int, int] = (40, 30),
    colour: tuple[int, int, int] = (200, 30, 30),
) -> bytes:
    exif = Image.Exif()
    if camera:
        exif[0x010F], exif[0x0110] = camera
    sub = exif.get_ifd(0x8769)
    if taken:
        sub[0x9003] = taken
    if offset:
        sub[0x9011] = offset
    if gps:
        exif.get_ifd(0x8825)[1] = "N"  # GPSLatitudeRef
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG", exif=exif)
    return out.getvalue()


def test_content_facts_from_exif() -> None:
    assert content_facts(exif_jpeg()) == {
        "gps": True,
        "type": "image/jpeg",
        "camera": "Canon Canon EOS 5D",
        "exif_taken": "2021-07-14T09:30:05",
    }
    facts = content_facts(exif_jpeg(offset="+02:00", gps=False, camera=None))
    assert facts == {"gps": False, "type": "image/jpeg", "exif_taken": "2021-07-14T09:30:05+02:00"}


def test_content_facts_without_exif_or_with_a_bad_date() -> None:
    png = io.BytesIO()
    Image.new("RGB", (5, 5)).save(png, "PNG")
    assert content_facts(png.getvalue()) == {"gps": False, "type": "image/png"}
    assert "exif_taken" not in content_facts(exif_jpeg(taken="0000:00:00 00:00:00"))
    assert "exif_taken" not in content_facts(exif_jpeg(taken="2021:02:30 10:00:00"))
    assert content_facts(b"not an image at all") == {"gps": False}


def test_row_facts_exif_date_else_mtime() -> None:
    content = content_facts(exif_jpeg())
    row = row_facts("a/b.JPG", "/x/a/b.JPG", 1_700_000_000.7, content)
    assert row == {
        "ext": "jpg",
        "type": "image/jpeg",
        "camera": "Canon Canon EOS 5D",
        "taken_at": "2021-07-14T09:30:05",
        "taken_at_source": "exif",
        "gps": True,
    }
    row = row_facts(12, "s3://b/k/c.webp", 1_700_000_000.7, {"gps": False, "type": "image/webp"})
    assert row == {
        "ext": "webp",
        "type": "image/webp",
        "taken_at": "2023-11-14T22:13:20Z",
        "taken_at_source": "mtime",
        "gps": False,
    }
    assert row_facts("noext", "/x/noext", None, None) == {}


def test_previous_content_round_trip() -> None:
    content = content_facts(exif_jpeg())
    assert previous_content({"id": "a", **row_facts("a.jpg", "/a.jpg", 5.0, content)}) == content
    mtime_only = {"gps": False, "type": "image/png"}
    assert previous_content(row_facts("a.png", "/a.png", 5.0, mtime_only)) == mtime_only
    assert previous_content({"id": "a", "width": 4, "height": 4}) is None  # an older builder's row


def test_build_writes_the_fields(demo_bundle: Path, tmp_path: Path, cli: Any) -> None:
    src, dest = tmp_path / "src", tmp_path / "index"
    (src / "trip").mkdir(parents=True)
    (src / "trip" / "a.jpg").write_bytes(exif_jpeg())
    Image.new("RGB", (24, 16), (10, 200, 10)).save(src / "b.png")
    os.utime(src / "b.png", (1_600_000_000, 1_600_000_000))
    (src / "b.json").write_text(json.dumps({"album": "garden"}))
    assert cli(*build_args(src, demo_bundle, dest)).rc == 0
    rows = {r["id"]: r for r in read_version(dest)["items"]}
    a, b = rows["trip/a.jpg"], rows["b.png"]
    assert (a["width"], a["height"], a["ext"], a["type"]) == (40, 30, "jpg", "image/jpeg")
    assert (a["taken_at"], a["taken_at_source"], a["camera"], a["gps"]) == (
        "2021-07-14T09:30:05",
        "exif",
        "Canon Canon EOS 5D",
        True,
    )
    assert (b["width"], b["height"], b["ext"], b["type"], b["gps"]) == (24, 16, "png", "image/png", False)
    assert (b["taken_at"], b["taken_at_source"], b["mtime"]) == ("2020-09-13T12:26:40Z", "mtime", 1.6e9)
    assert "camera" not in b and b["metadata"] == {"album": "garden"}
    assert list(b)[-1] == "metadata"

    # unchanged files: nothing to publish; a renamed copy (vector reused by content) keeps its EXIF facts
    assert "no changes" in cli(*build_args(src, demo_bundle, dest)).out
    (src / "trip" / "a.jpg").rename(src / "trip" / "c.jpg")
    assert cli(*build_args(src, demo_bundle, dest)).rc == 0
    v = read_version(dest)
    c = {r["id"]: r for r in v["items"]}["trip/c.jpg"]
    assert v["manifest"]["stats"]["embedded"] == 0
    assert {k: c[k] for k in ("taken_at", "camera", "gps")} == {
        k: a[k] for k in ("taken_at", "camera", "gps")
    }


@pytest.mark.parametrize("parallel", [False, True])
def test_rows_of_an_older_builder_get_the_fields_without_embedding_again(
    demo_bundle: Path, tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch, parallel: bool
) -> None:
    """An index written before the facts existed: the next build reads the files again (vectors reused by
    content hash, nothing embedded) and publishes rows with the fields."""
    from index_builder import facts, previous

    src, dest = tmp_path / "src", tmp_path / "index"
    src.mkdir()
    (src / "a.jpg").write_bytes(exif_jpeg())
    Image.new("RGB", (24, 16)).save(src / "b.png")
    monkeypatch.setattr(previous, "row_facts", lambda *a: {})  # the older builder
    assert cli(*build_args(src, demo_bundle, dest)).rc == 0
    assert "gps" not in read_version(dest)["items"][0]
    monkeypatch.setattr(previous, "row_facts", facts.row_facts)
    extra = ("--parallel", "2") if parallel else ()
    assert cli(*build_args(src, demo_bundle, dest, *extra)).rc == 0
    v = read_version(dest)
    assert v["manifest"]["stats"]["embedded"] == 0
    rows = {r["id"]: r for r in v["items"]}
    assert rows["a.jpg"]["taken_at_source"] == "exif" and rows["b.png"]["taken_at_source"] == "mtime"
    assert "no changes" in cli(*build_args(src, demo_bundle, dest)).out
