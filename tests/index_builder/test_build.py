"""End-to-end builds from local folders and JSONL manifests into local index directories (demo model)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from demo.shapes import CLASSES
from handler.core.index import load_index
from handler.core.runtime import load_bundle
from handler.core.storage import open_store
from index_builder.options import BuildOptions
from tests.conftest import index_file_key, normalized_vectors
from tests.index_builder.conftest import (
    build_args,
    cli_command,
    collection,
    copy_bundle_with_fingerprint,
    current,
    ids_of,
    read_version,
    subprocess_env,
    vectors_by_id,
)


@pytest.fixture(scope="module")
def embedder(demo_bundle: Path):
    return load_bundle(demo_bundle)


def test_build_folder_into_local_dir(demo_bundle: Path, embedder, tmp_path: Path, cli) -> None:
    src, dest = tmp_path / "src", tmp_path / "index"
    paths = collection(src, 96)
    (src / "notes.txt").write_text("not an image")  # non-image extensions are not considered
    r = cli(*build_args(src, demo_bundle, dest))
    assert r.rc == 0, r.err
    assert "published version" in r.out and "96 items" in r.out and "embedded 96" in r.out

    v = read_version(dest)
    m = v["manifest"]
    assert m["model_fingerprint"] == embedder.model_fingerprint
    assert (m["precision"], m["dim"], m["count"], m["M"], m["ef_construction"]) == (
        "fp32",
        embedder.dim,
        96,
        16,
        200,
    )
    # the default ef is measured: the smallest reaching recall@10 0.99 on the collection itself
    assert m["ef"] == m["shards"][0]["ef"] and m["recall"]["target"] == 0.99
    assert m["recall"]["measured"] >= 0.99
    assert (
        m["source"] == str(src) and m["builder"].startswith("index_builder") and m["built_at"].endswith("Z")
    )
    assert m["backend"] == "onnx" and m["previous_version"] is None
    assert {k: m["stats"][k] for k in ("embedded", "unchanged", "removed", "errors")} == {
        "embedded": 96,
        "unchanged": 0,
        "removed": 0,
        "errors": 0,
    }
    assert set(m["files"]) == {"errors.jsonl", "duplicates.jsonl"} and len(m["shards"]) == 1
    assert set(m["shards"][0]["files"]) == {"hnsw", "items", "embeddings"}
    assert {row["id"] for row in v["items"]} == ids_of(paths, src)
    assert v["errors"] == []

    row = next(r for r in v["items"] if r["id"] == "set_a/img_00001.jpg")
    path = src / "set_a/img_00001.jpg"
    assert set(row) >= {"id", "uri", "size", "mtime", "sha256", "width", "height", "metadata"}
    assert (
        row["uri"] == str(path)
        and row["size"] == path.stat().st_size
        and row["mtime"] == path.stat().st_mtime
    )
    assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (row["width"], row["height"]) == (64, 64)
    assert row["metadata"] == json.loads(path.with_suffix(".json").read_text())

    # vectors are the runtime's embeddings of the same files, in label order
    expected = embedder.embed_images([src / row["id"] for row in v["items"]])
    cos = np.sum(expected * v["embeddings"], axis=1)
    assert cos.min() > 0.99999
    assert not (dest / ".work").exists()  # work dir cleaned after publishing
    index = load_index(dest, expected_fingerprint=embedder.model_fingerprint)
    assert (
        index.count == 96
        and index.get_item("set_a/img_00001.jpg")["metadata"]["shape"] == row["metadata"]["shape"]
    )


def test_result_does_not_depend_on_workers_or_batching(demo_bundle: Path, tmp_path: Path, cli) -> None:
    src = tmp_path / "src"
    collection(src, 40, seed=3)
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli(*build_args(src, demo_bundle, a, "--workers", 1, "--batch-size", 7)).rc == 0
    assert cli(*build_args(src, demo_bundle, b, "--workers", 3, "--batch-size", 32)).rc == 0
    va, vb = read_version(a), read_version(b)
    assert [r["id"] for r in va["items"]] == [r["id"] for r in vb["items"]]
    np.testing.assert_allclose(va["embeddings"], vb["embeddings"], atol=1e-5)


def test_semantic_sanity_red_circle(demo_bundle: Path, embedder, tmp_path: Path, cli) -> None:
    src, dest = tmp_path / "src", tmp_path / "index"
    collection(src, 4 * len(CLASSES), seed=11, size=96)  # 4 images per class
    assert cli(*build_args(src, demo_bundle, dest)).rc == 0
    index = load_index(dest, expected_fingerprint=embedder.model_fingerprint)
    query = embedder.embed_texts("a red circle")
    hits = index.search(query, k=8)[0]
    labels = [(h.item["metadata"]["colour"], h.item["metadata"]["shape"]) for h in hits]
    assert labels[0] == ("red", "circle"), labels
    # the index ranks like exact search over the stored embeddings
    v = read_version(dest)
    exact = [v["items"][i]["id"] for i in np.argsort(-(v["embeddings"] @ query[0]))[:8]]
    assert [h.item["id"] for h in hits] == exact


def _recall_at_10(index, vectors: np.ndarray, queries: np.ndarray) -> float:
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    hits = index.search(queries, k=10)
    found = [
        len({h.label for h in row} & set(truth.tolist())) for row, truth in zip(hits, exact, strict=True)
    ]
    return float(np.sum(found)) / exact.size


def test_recall_at_default_parameters(tmp_path: Path) -> None:
    """The builder's default HNSW parameters give recall@10 ~0.99 against exact search on 4000 clustered
    vectors, for image-like queries (perturbed collection vectors) and text-like queries (shifted by a
    common offset, like CLIP's modality gap: best cosine ~0.5)."""
    from index_builder.publish import publish
    from index_builder.version_write import write_version

    defaults = BuildOptions(source="", bundle="", out="")
    dim = 128
    vectors = normalized_vectors(4000, dim, clusters=40, spread=0.5, seed=5)
    rng = np.random.default_rng(6)
    base = vectors[rng.integers(0, len(vectors), 1000)]
    gap = rng.standard_normal(dim).astype(np.float32)
    gap /= np.linalg.norm(gap)
    image_like = base + 0.3 * rng.standard_normal(base.shape).astype(np.float32) / np.sqrt(dim)
    text_like = base + 1.5 * gap + 0.8 * rng.standard_normal(base.shape).astype(np.float32) / np.sqrt(dim)
    items = [{"id": i} for i in range(len(vectors))]
    manifest = write_version(
        tmp_path,
        "v1",
        vectors=vectors,
        items=items,
        manifest_fields={"model_fingerprint": "sha256:test"},
        M=defaults.M,
        ef_construction=defaults.ef_construction,
        ef=defaults.ef,
    )
    publish(tmp_path, "v1", manifest)
    index = load_index(tmp_path)
    for name, queries in (("image-like", image_like), ("text-like", text_like)):
        queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
        recall = _recall_at_10(index, vectors, queries)
        # the builder calibrates ef to 0.99 on its own sample of such queries (multithreaded builds differ
        # run to run); these are another sample of 10,000 neighbours: 0.005 is ~4 standard errors
        assert recall >= 0.985, (name, recall)
    assert manifest["recall"]["measured"] >= 0.99, manifest["recall"]


def test_recall_on_built_demo_index(demo_bundle: Path, embedder, tmp_path: Path, cli) -> None:
    src, dest = tmp_path / "src", tmp_path / "index"
    collection(src, 200, seed=21)
    assert cli(*build_args(src, demo_bundle, dest)).rc == 0
    v = read_version(dest)
    texts = [f"a {c} {s}" for c, s in CLASSES]
    queries = np.concatenate([embedder.embed_texts(texts), v["embeddings"][::5]])
    assert _recall_at_10(load_index(dest), v["embeddings"], queries) >= 0.99


def test_incremental_add_change_delete(demo_bundle: Path, embedder, tmp_path: Path, cli) -> None:
    src, dest = tmp_path / "src", tmp_path / "index"
    paths = collection(src, 60, seed=1)
    assert cli(*build_args(src, demo_bundle, dest)).rc == 0
    v1 = read_version(dest)

    # unchanged source: nothing is embedded, nothing read (size + mtime match), nothing published
    r = cli(*build_args(src, demo_bundle, dest))
    assert r.rc == 0 and "embedded 0" in r.out and "unchanged 60" in r.out and "no changes" in r.out
    assert current(dest) == v1["version"]

    # add 5 (other classes' pixels), change 2 (different images under the same names), delete 3
    extra = collection(tmp_path / "extra", 7, seed=99)
    added = []
    for i, p in enumerate(extra[:5]):
        target = src / "new" / f"added_{i}.jpg"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(p.read_bytes())
        added.append(target)
    changed = paths[10:12]
    for p, new in zip(changed, extra[5:], strict=True):
        p.write_bytes(new.read_bytes())
    deleted = paths[20:23]
    for p in deleted:
        p.unlink()
    r = cli(*build_args(src, demo_bundle, dest))
    assert r.rc == 0, r.err
    v3 = read_version(dest)
    stats = v3["manifest"]["stats"]
    assert (stats["embedded"], stats["removed"], stats["unchanged"], stats["errors"]) == (7, 3, 60 - 3 - 2, 0)
    assert (stats["added"], stats["changed"], stats["count"]) == (5, 2, 62)
    assert "embedded 7" in r.out and "removed 3" in r.out

    index = load_index(dest)
    ids = {row["id"] for row in v3["items"]}
    assert ids == ids_of(paths, src) - ids_of(deleted, src) | ids_of(added, src)
    for p in added + changed:  # new and changed images are found by their own (fresh) embedding
        item_id = p.relative_to(src).as_posix()
        hit = index.search(embedder.embed_images([p]), k=1)[0][0]
        assert hit.item["id"] == item_id and hit.score > 0.9999
        assert index.get_item(item_id)["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    for p in deleted:
        assert index.get_item(p.relative_to(src).as_posix()) is None
    old = vectors_by_id(v1)
    new = vectors_by_id(v3)
    for item_id in ids_of(paths, src) - ids_of(deleted + changed, src):
        np.testing.assert_array_equal(new[item_id], old[item_id])


def test_touched_and_renamed_files_are_not_embedded_again(demo_bundle: Path, tmp_path: Path, cli) -> None:
    src, dest = tmp_path / "src", tmp_path / "index"
    paths = collection(src, 20, seed=2)
    assert cli(*build_args(src, demo_bundle, dest)).rc == 0
    os.utime(paths[0], (1_000_000_000, 1_000_000_000))  # new mtime, same bytes: hashed, not embedded
    paths[1].rename(src / "renamed.jpg")  # same bytes under a new id: vector reused by content hash
    assert cli(*build_args(src, demo_bundle, dest)).rc == 0
    stats = read_version(dest)["manifest"]["stats"]
    assert (stats["embedded"], stats["unchanged"], stats["reused"], stats["added"], stats["removed"]) == (
        0,
        19,
        1,
        1,
        1,
    )


def test_jsonl_source(demo_bundle: Path, tmp_path: Path, cli) -> None:
    paths = collection(tmp_path / "imgs", 12, seed=4)
    manifest = tmp_path / "m" / "collection.jsonl"
    manifest.parent.mkdir()
    lines = [
        {"id": f"item-{i}", "uri": str(p), "caption": f"caption {i}", "tags": ["x", i]}
        for i, p in enumerate(paths[:10])
    ]
    lines.append({"id": 77, "uri": os.path.relpath(paths[10], manifest.parent)})  # relative to the manifest
    lines.append({"id": "missing", "uri": str(tmp_path / "nope.jpg")})
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    dest = tmp_path / "index"
    r = cli(*build_args(manifest, demo_bundle, dest))
    assert r.rc == 0, r.err
    v = read_version(dest)
    assert [row["id"] for row in v["items"]] == [f"item-{i}" for i in range(10)] + [77]
    assert v["items"][3]["metadata"] == {"caption": "caption 3", "tags": ["x", 3]}
    assert v["items"][10]["uri"] == str(paths[10]) and v["items"][10]["metadata"] == {}
    assert [(e["id"], e["reason"]) for e in v["errors"]] == [("missing", "unreadable")]
    assert v["manifest"]["stats"]["errors"] == 1 and v["manifest"]["source"] == str(manifest)

    # duplicate ids are refused, naming both lines; nothing is published
    manifest.write_text(
        json.dumps(lines[0]) + "\n" + json.dumps({"id": "item-0", "uri": str(paths[1])}) + "\n"
    )
    before = current(dest)
    r = cli(*build_args(manifest, demo_bundle, dest))
    assert r.rc == 1 and "duplicate id 'item-0'" in r.err and "line 2" in r.err and "line 1" in r.err
    assert "Traceback" not in r.err and current(dest) == before


def _png_bomb_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


def _bad_collection(src: Path) -> tuple[set[str], dict[str, str]]:
    """Good images (several formats) plus one file of each kind of bad; returns
    (good ids, {bad id: reason})."""
    from PIL import Image

    paths = collection(src, 10, seed=8)
    good = ids_of(paths, src)
    base = Image.open(paths[0])
    for fmt, ext in (("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tiff")):
        base.save(src / f"other.{ext}", format=fmt)
        good.add(f"other.{ext}")
    jpeg = paths[1].read_bytes()
    png = (src / "other.png").read_bytes()
    bad_dir = src / "bad"
    bad_dir.mkdir()
    (bad_dir / "zero.jpg").write_bytes(b"")
    (bad_dir / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (bad_dir / "truncated.png").write_bytes(png[: len(png) // 2])
    (bad_dir / "text.png").write_text("this is not a png\n")
    (bad_dir / "garbage.jpg").write_bytes(os.urandom(3000))
    (bad_dir / "bomb.png").write_bytes(_png_bomb_header(100_000, 100_000))
    Image.new("RGB", (200, 200), (200, 10, 10)).save(bad_dir / "big.jpg")  # over --max-pixels 10000
    (bad_dir / "broken.jpg").symlink_to(bad_dir / "does-not-exist.jpg")
    (bad_dir / "loop.jpg").symlink_to(bad_dir / "loop.jpg")
    (bad_dir / "readme.txt").write_text("ignored: not an image extension")
    reasons = {
        "bad/zero.jpg": "empty",
        "bad/truncated.jpg": "truncated",
        "bad/truncated.png": "truncated",
        "bad/text.png": "not_an_image",
        "bad/garbage.jpg": "not_an_image",
        "bad/bomb.png": "too_large",
        "bad/big.jpg": "too_large",
        "bad/broken.jpg": "unreadable",
        "bad/loop.jpg": "unreadable",
    }
    return good, reasons


def test_bad_files_are_skipped_and_listed(demo_bundle: Path, tmp_path: Path, cli) -> None:
    src, dest = tmp_path / "src", tmp_path / "index"
    good, reasons = _bad_collection(src)
    r = cli("build", "--source", src, "--bundle", demo_bundle, "--out", dest, "--max-pixels", 10_000)
    assert r.rc == 0, r.err
    assert "errors 9" in r.out and "Traceback" not in r.err
    for bad_id in reasons:
        assert f"skipped {bad_id}: " in r.err
    v = read_version(dest)
    assert {row["id"] for row in v["items"]} == good
    assert {e["id"]: e["reason"] for e in v["errors"]} == reasons
    assert all(e["message"] and e["uri"] for e in v["errors"])
    assert "10000000000 pixels" in next(e["message"] for e in v["errors"] if e["id"] == "bad/bomb.png")
    assert "10000 pixels" in next(e["message"] for e in v["errors"] if e["id"] == "bad/big.jpg")
    assert v["manifest"]["stats"]["errors"] == 9 and v["manifest"]["count"] == len(good)

    # --strict: the same collection is a failure and nothing new is published
    before = current(dest)
    r = cli(*build_args(src, demo_bundle, dest, "--max-pixels", 10_000, "--strict"))
    assert r.rc == 1 and "--strict: 9 file(s) could not be indexed" in r.err and "bad/zero.jpg" in r.err
    assert current(dest) == before


def test_model_fingerprint_mismatch_is_refused_unless_full(demo_bundle: Path, tmp_path: Path, cli) -> None:
    src, dest = tmp_path / "src", tmp_path / "index"
    collection(src, 10, seed=5)
    assert cli(*build_args(src, demo_bundle, dest)).rc == 0
    other = copy_bundle_with_fingerprint(demo_bundle, tmp_path / "other-bundle", "sha256:" + "0" * 64)
    before = current(dest)
    r = cli(*build_args(src, other, dest))
    assert r.rc == 1 and "Traceback" not in r.err
    assert "sha256:" + "0" * 64 in r.err and "--full" in r.err and "model" in r.err
    assert current(dest) == before
    r = cli(*build_args(src, other, dest, "--full"))
    assert r.rc == 0 and "embedded 10" in r.out
    assert read_version(dest)["manifest"]["model_fingerprint"] == "sha256:" + "0" * 64


def test_info_and_verify(demo_bundle: Path, tmp_path: Path, cli) -> None:
    src, dest = tmp_path / "src", tmp_path / "index"
    collection(src, 12, seed=6)
    assert cli(*build_args(src, demo_bundle, dest)).rc == 0
    assert (
        cli(*build_args(src, demo_bundle, dest, "--ef-construction", 100)).rc == 0
    )  # a new setting: new version
    r = cli("info", dest, "--json")
    assert r.rc == 0
    info = r.json()  # exactly one JSON object
    v = read_version(dest)
    assert info["version"] == v["version"] and info["count"] == 12 and info["dim"] == v["manifest"]["dim"]
    assert info["model_fingerprint"] == v["manifest"]["model_fingerprint"] and info["precision"] == "fp32"
    assert info["built_at"] and info["stats"]["unchanged"] == 12
    assert [x["current"] for x in info["versions"]] == [False, True]
    r = cli("info", dest)
    assert r.rc == 0 and v["version"] in r.out and "(current)" in r.out

    r = cli("verify", dest, "--bundle", demo_bundle)
    assert r.rc == 0 and "intact" in r.out, r.err
    other = copy_bundle_with_fingerprint(demo_bundle, tmp_path / "other-bundle", "sha256:" + "1" * 64)
    r = cli("verify", dest, "--bundle", other)
    assert r.rc == 1 and "model_fingerprint" in r.err

    # tamper with one file: verify names it
    items_key = index_file_key(open_store(str(dest)), v["version"], "items")
    items = dest / items_key
    items.write_bytes(items.read_bytes().replace(b"img_00003", b"img_00004"))
    r = cli("verify", dest)
    assert r.rc == 1 and items_key in r.err and "sha256" in r.err
    # a pointer that does not match its manifest
    (dest / "CURRENT").write_text(json.dumps({"version": v["version"], "manifest_sha256": "0" * 64}))
    r = cli("verify", dest)
    assert r.rc == 1 and "manifest" in r.err and "does not match" in r.err
    r = cli("info", tmp_path / "nothing-here", "--json")
    assert r.rc == 1 and "no index" in r.err and r.out == ""


def test_keep_versions_prunes_old_versions(demo_bundle: Path, tmp_path: Path, cli) -> None:
    src, dest = tmp_path / "src", tmp_path / "index"
    collection(src, 6, seed=7)
    for i in range(4):  # each with another default ef, so each publishes a version
        assert cli(*build_args(src, demo_bundle, dest, "--keep-versions", 2, "--ef", 100 + i)).rc == 0
    versions = sorted(p.name for p in (dest / "versions").iterdir())
    assert len(versions) == 2 and versions[-1] == current(dest)


def test_precision_variant_and_switching(demo_bundle: Path, tmp_path: Path, cli) -> None:
    src, dest = tmp_path / "src", tmp_path / "index"
    collection(src, 10, seed=9)
    assert cli(*build_args(src, demo_bundle, dest, "--precision", "int8")).rc == 0
    assert read_version(dest)["manifest"]["precision"] == "int8"
    r = cli(*build_args(src, demo_bundle, dest))  # fp32 now: int8 vectors are not reused
    assert r.rc == 0 and "embedded 10" in r.out
    r = cli(*build_args(src, demo_bundle, dest, "--precision", "fp16"))
    assert r.rc == 1 and "fp16" in r.err and "Traceback" not in r.err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--source", "{tmp}/missing"], 2, "no such folder or manifest file"),
        (["--bundle", "{tmp}"], 1, "not a model bundle"),
        (["--M", "1"], 2, "--M 1: must be an integer >= 2"),
        (["--batch-size", "0"], 2, "--batch-size"),
        (["--source", "{tmp}/empty"], 1, "has no images"),
        (["--out", "gs://bucket/x"], 2, "unsupported scheme"),
        (["--backend", "torch"], 2, "--backend torch needs --pretrained"),
        (["--pretrained", "x.pt"], 2, "only used by --backend torch"),
        (["--device", "cuda"], 2, "the onnx backend runs on cpu"),
    ],
)
def test_user_errors_are_clear(
    demo_bundle: Path, tmp_path: Path, cli, args: list[str], code: int, message: str
) -> None:
    src = tmp_path / "src"
    collection(src, 2)
    (tmp_path / "empty").mkdir()
    base = {"--source": str(src), "--bundle": str(demo_bundle), "--out": str(tmp_path / "index")}
    extra: list[str] = []
    for i in range(0, len(args), 2):
        if args[i] in base:
            base[args[i]] = args[i + 1].format(tmp=tmp_path)
        else:
            extra += args[i : i + 2]
    r = cli("build", *[x for kv in base.items() for x in kv], *extra)
    assert r.rc == code, (r.rc, r.err)
    assert message in r.err and "Traceback" not in r.err
    assert current(tmp_path / "index") is None


def test_onnx_build_does_not_import_torch(demo_bundle: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    collection(src, 4)
    code = (
        "import sys; from index_builder.cli import main; "
        f"rc = main(['build', '--source', {str(src)!r}, '--bundle', {str(demo_bundle)!r}, "
        f"'--out', {str(tmp_path / 'index')!r}, '--quiet']); "
        "bad = [m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules]; "
        "print(rc, bad); sys.exit(rc or len(bad))"
    )
    proc = subprocess.run(
        [*cli_command()[:1], "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 []" in proc.stdout
    help_proc = subprocess.run(
        cli_command("build", "--help"), env=subprocess_env(), capture_output=True, text=True, timeout=60
    )
    assert help_proc.returncode == 0 and "--keep-versions" in help_proc.stdout


def test_rebuild_without_changes_publishes_nothing(demo_bundle: Path, tmp_path: Path, cli) -> None:
    """Issue 11 #14: an unchanged rebuild published a new version (warm functions swapped, --keep-versions
    pruned real history). Settings that change the index still publish."""
    src, dest = tmp_path / "src", tmp_path / "index"
    collection(src, 10, seed=12)
    assert cli(*build_args(src, demo_bundle, dest, "--keep-versions", 2)).rc == 0
    v1 = current(dest)
    assert cli(*build_args(src, demo_bundle, dest, "--keep-versions", 2, "--ef", 64)).rc == 0
    v2 = current(dest)
    assert v2 != v1
    (src / "logo.svg").write_text("<svg/>")  # not an image: reported, changes nothing
    r = cli(
        "build", "--source", src, "--bundle", demo_bundle, "--out", dest, "--keep-versions", 2, "--ef", 64
    )
    assert r.rc == 0, r.err
    assert f"no changes: {dest} stays at version {v2}, nothing published" in r.out and "unchanged 10" in r.out
    assert "skipped 1 .svg" in r.out
    r = cli(*build_args(src, demo_bundle, dest, "--keep-versions", 2, "--ef", 64, "--json"))
    assert r.rc == 0 and r.json()["published"] is False and r.json()["version"] == v2
    assert current(dest) == v2 and sorted(p.name for p in (dest / "versions").iterdir()) == [v1, v2]
    assert not (dest / ".work").exists()
    # an index-changing option publishes even though no image changed
    for extra in (["--M", 8], ["--ef-construction", 100], ["--precision", "int8"], ["--full"]):
        before = current(dest)
        r = cli(*build_args(src, demo_bundle, dest, "--ef", 64, *extra, "--json"))
        assert r.rc == 0 and r.json()["published"] is True, (extra, r.err)
        assert current(dest) != before, extra


def test_verify_accepts_duplicate_images(demo_bundle: Path, tmp_path: Path, cli) -> None:
    """Issue 11 #13: identical images share a vector, so the search may return another copy first;
    verify said "only 45% of sampled vectors find themselves" on an intact index."""
    src, dest = tmp_path / "src", tmp_path / "index"
    paths = collection(src, 12, seed=13)
    (src / "copies").mkdir()
    for i in range(40):
        (src / "copies" / f"copy_{i:02d}.jpg").write_bytes(paths[0].read_bytes())
    assert cli(*build_args(src, demo_bundle, dest)).rc == 0
    r = cli("verify", dest)
    assert r.rc == 0 and "intact" in r.out, r.err


def test_unindexable_files_are_reported_by_name_without_content(
    demo_bundle: Path, tmp_path: Path, cli
) -> None:
    """Issue 11 #4, #15, #16, #20 end to end: a file over --max-file-bytes is not read, skipped files are
    counted by extension, Pillow warnings name the file (silenced by --quiet), and neither errors.jsonl nor
    the output quotes file content or follows a symlink out of the folder."""
    from tests.index_builder.test_pipeline import _jpeg_with_bad_exif

    src, dest = tmp_path / "src", tmp_path / "index"
    collection(src, 6, seed=14)
    (src / "huge.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 50_000)
    (src / "passwd.jpg").symlink_to("/etc/passwd")
    (src / "text.jpg").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    (src / "exif.jpg").write_bytes(_jpeg_with_bad_exif((10, 200, 10)))
    for name in ("logo.svg", "b.svg", "photo.heic", "notes.txt", ".DS_Store"):
        (src / name).write_bytes(b"x")
    r = cli("build", "--source", src, "--bundle", demo_bundle, "--out", dest, "--max-file-bytes", 40_000)
    assert r.rc == 0, r.err
    v = read_version(dest)
    assert {e["id"]: e["reason"] for e in v["errors"]} == {
        "huge.jpg": "file_too_large",
        "passwd.jpg": "outside_root",
        "text.jpg": "not_an_image",
    }
    assert v["manifest"]["count"] == 7
    skipped = {".svg": 2, ".heic": 1, ".txt": 1, "hidden": 1}
    assert v["manifest"]["stats"]["skipped"] == skipped and v["manifest"]["stats"]["warnings"] == 1
    assert "skipped 2 .svg, 1 .heic, 1 .txt, 1 hidden (not images)" in r.out
    assert "warning: exif.jpg: UserWarning: Tag data larger than file" in r.err
    raw = (dest / "versions" / v["version"] / "errors.jsonl").read_text()
    for text in (raw, r.out, r.err):
        assert "root:x" not in text and "bin/bash" not in text and "upload" not in text
    r = cli(*build_args(src, demo_bundle, dest, "--max-file-bytes", 40_000, "--full", "--json"))
    assert r.rc == 0 and "Tag data" not in r.err and "warning" not in r.err  # --quiet
    out = r.json()
    assert out["skipped"] == skipped and [(w["id"], w["message"][:11]) for w in out["warnings"]] == [
        ("exif.jpg", "UserWarning")
    ]
    assert "root:x" not in r.out


def test_precision_defaults_to_the_services_precision(
    demo_bundle: Path, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --precision the builder embeds with the service's PRECISION (int8 service -> int8 index)."""
    src = tmp_path / "src"
    collection(src, 4, seed=3)
    monkeypatch.setenv("PRECISION", "INT8")
    assert cli(*build_args(src, demo_bundle, tmp_path / "a")).rc == 0
    assert read_version(tmp_path / "a")["manifest"]["precision"] == "int8"
    assert cli(*build_args(src, demo_bundle, tmp_path / "b", "--precision", "fp32")).rc == 0  # the flag wins
    assert read_version(tmp_path / "b")["manifest"]["precision"] == "fp32"
    monkeypatch.setenv("PRECISION", "fp64")
    r = cli(*build_args(src, demo_bundle, tmp_path / "c"))
    assert r.rc != 0 and "PRECISION='fp64'" in r.err and "Traceback" not in r.err
    monkeypatch.delenv("PRECISION")
    assert cli(*build_args(src, demo_bundle, tmp_path / "d")).rc == 0
    assert read_version(tmp_path / "d")["manifest"]["precision"] == "fp32"
