"""``import-embeddings``: precomputed vectors (.npy + JSONL/parquet ids, clip-retrieval layout) published as
an index version the service loads; the model is explicit and never mixed."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handler.core.index import load_index
from index_builder import embeddings_files
from index_builder.errors import BuildError, UsageError
from index_builder.precomputed import ImportOptions, import_embeddings
from tests.conftest import normalized_vectors
from tests.index_builder.conftest import current, read_version

FP = "sha256:" + "ab" * 32
OTHER_FP = "sha256:" + "cd" * 32
DIM = 16


def write_npy_jsonl(
    root: Path, vectors: np.ndarray, ids: list[Any] | None = None, **extra: Any
) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "vectors.npy", vectors)
    ids = ids if ids is not None else [f"img{i}" for i in range(len(vectors))]
    with open(root / "ids.jsonl", "w") as f:
        for i, item_id in enumerate(ids):
            f.write(
                json.dumps(
                    {"id": item_id, "url": f"https://example.com/{i}.jpg", "caption": f"c{i}", **extra}
                )
                + "\n"
            )
    return root / "vectors.npy", root / "ids.jsonl"


def write_clip_retrieval(root: Path, parts: list[np.ndarray], digits: int = 1) -> None:
    """What clip-retrieval's OutputSink writes: float16 img_emb_<N>.npy + metadata_<N>.parquet (pandas)."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir(parents=True)
    start = 0
    for n, vecs in enumerate(parts):
        tag = str(n).zfill(digits)
        np.save(root / "img_emb" / f"img_emb_{tag}.npy", vecs.astype(np.float16))
        rows = range(start, start + len(vecs))
        table = pa.table(
            {
                "image_path": [f"/data/images/{i:05d}.jpg" for i in rows],
                "caption": [f"caption {i}" for i in rows],
                "similarity": [float("nan") if i == 0 else 0.5 for i in rows],
            }
        )
        pq.write_table(table, root / "metadata" / f"metadata_{tag}.parquet")
        start += len(vecs)


def opts(source: Path | str, out: Path, **kw: Any) -> ImportOptions:
    kw.setdefault("model_fingerprint", FP)
    return ImportOptions(source=str(source), out=str(out), quiet=True, **kw)


def test_npy_jsonl_import_is_searchable(tmp_path: Path) -> None:
    vectors = normalized_vectors(300, DIM, clusters=5, seed=1) * 3.0  # not normalised: import does it
    npy, ids = write_npy_jsonl(tmp_path / "src", vectors)
    out = tmp_path / "index"
    r = import_embeddings(opts(npy, out, ids=str(ids)))
    assert current(out) == r.version and r.count == 300
    v = read_version(out)
    m = v["manifest"]
    assert m["model_fingerprint"] == FP and m["count"] == 300 and m["dim"] == DIM
    assert m["imported"]["layout"] == "npy" and m["imported"]["normalised"] is True
    assert v["items"][7] == {"id": "img7", "uri": "https://example.com/7.jpg", "metadata": {"caption": "c7"}}
    np.testing.assert_allclose(np.linalg.norm(v["embeddings"], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(v["embeddings"], vectors / 3.0, atol=1e-5)
    index = load_index(out, expected_fingerprint=FP)  # what the service loads
    for i in (0, 123, 299):
        hit = index.search(vectors[i] / 3.0, k=1)[0][0]
        assert hit.item["id"] == f"img{i}" and hit.score == pytest.approx(1.0, abs=1e-4)


def test_parquet_ids(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    vectors = normalized_vectors(50, DIM, seed=2)
    np.save(tmp_path / "v.npy", vectors.astype(np.float64))
    pq.write_table(
        pa.table({"id": list(range(100, 150)), "path": [f"p/{i}.png" for i in range(50)]}),
        tmp_path / "ids.parquet",
    )
    out = tmp_path / "index"
    import_embeddings(opts(tmp_path / "v.npy", out, ids=str(tmp_path / "ids.parquet")))
    items = read_version(out)["items"]
    assert items[3] == {"id": 103, "uri": "p/3.png", "metadata": {}}


def test_clip_retrieval_layout(tmp_path: Path) -> None:
    parts = [normalized_vectors(n, DIM, seed=s) for s, n in enumerate((40, 25, 11))]
    src = tmp_path / "emb"
    write_clip_retrieval(src, parts, digits=2)
    out = tmp_path / "index"
    r = import_embeddings(opts(src, out))
    v = read_version(out)
    assert r.count == 76 and v["manifest"]["imported"] | {"uri": None} == {
        "kind": "embeddings",
        "layout": "clip-retrieval",
        "uri": None,
        "ids": None,
        "files": 3,
        "dtype": "float16",
        "normalised": True,
    }
    # rows in file order, id = image_path (no id column), NaN metadata dropped
    assert v["items"][0] == {
        "id": "/data/images/00000.jpg",
        "uri": "/data/images/00000.jpg",
        "metadata": {"caption": "caption 0"},
    }
    assert v["items"][40]["metadata"] == {"caption": "caption 40", "similarity": 0.5}
    np.testing.assert_allclose(v["embeddings"], np.concatenate(parts), atol=2e-3)  # float16 input


def test_numbering_pairs_files_by_number_not_name(tmp_path: Path) -> None:
    parts = [normalized_vectors(3, DIM, seed=s) for s in range(11)]
    write_clip_retrieval(tmp_path / "emb", parts, digits=1)  # img_emb_10 sorts before img_emb_2 by name
    import_embeddings(opts(tmp_path / "emb", tmp_path / "index"))
    ids = [row["id"] for row in read_version(tmp_path / "index")["items"]]
    assert ids == [f"/data/images/{i:05d}.jpg" for i in range(33)]


def test_missing_metadata_file_refused(tmp_path: Path) -> None:
    write_clip_retrieval(tmp_path / "emb", [normalized_vectors(3, DIM), normalized_vectors(3, DIM, seed=1)])
    (tmp_path / "emb" / "metadata" / "metadata_1.parquet").unlink()
    with pytest.raises(BuildError, match=r"no metadata/metadata_1\.parquet"):
        import_embeddings(opts(tmp_path / "emb", tmp_path / "index"))
    assert current(tmp_path / "index") is None


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.ones(DIM, np.float32), r"shape \(16,\); expected a 2-D array"),
        (np.ones((2, 3, DIM), np.float32), r"shape \(2, 3, 16\)"),
        (np.ones((4, DIM), np.int32), r"dtype int32; expected floating point"),
    ],
)
def test_bad_shapes_refused(tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / "v.npy", array)
    (tmp_path / "ids.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(len(array))))
    with pytest.raises(BuildError, match=message):
        import_embeddings(opts(tmp_path / "v.npy", tmp_path / "index", ids=str(tmp_path / "ids.jsonl")))


def test_dim_differs_across_files_refused(tmp_path: Path) -> None:
    write_clip_retrieval(
        tmp_path / "emb", [normalized_vectors(3, DIM), normalized_vectors(3, DIM + 1, seed=1)]
    )
    with pytest.raises(BuildError, match=r"img_emb_1\.npy: dim 17, but .*img_emb_0\.npy has dim 16"):
        import_embeddings(opts(tmp_path / "emb", tmp_path / "index"))


def test_ids_count_must_equal_rows(tmp_path: Path) -> None:
    npy, ids = write_npy_jsonl(tmp_path, normalized_vectors(5, DIM), ids=["a", "b", "c", "d"])
    with pytest.raises(BuildError, match=r"has 5 rows but .*ids\.jsonl has 4"):
        import_embeddings(opts(npy, tmp_path / "index", ids=str(ids)))


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (["a", "b", "a"], r"duplicate id 'a' \(rows 0 and 2 of the import\)"),
        (["a", None, "c"], r"ids\.jsonl line 2: no 'id'"),
        (["a", 1.5, "c"], r"line 2: id 1\.5 must be a non-empty string or an integer"),
    ],
)
def test_bad_ids_refused(tmp_path: Path, ids: list[Any], message: str) -> None:
    npy, path = write_npy_jsonl(tmp_path, normalized_vectors(3, DIM), ids=ids)
    with pytest.raises(BuildError, match=message):
        import_embeddings(opts(npy, tmp_path / "index", ids=str(path)))


@pytest.mark.parametrize(
    ("value", "what"),
    [(np.nan, "holds NaN or infinity"), (np.inf, "holds NaN or infinity"), (0.0, "is all zeros")],
)
def test_bad_rows_refused_with_row_number(
    tmp_path: Path, value: float, what: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embeddings_files, "BLOCK_ROWS", 100)  # the bad row is in a later block
    parts = [normalized_vectors(300, DIM, seed=3), normalized_vectors(300, DIM, seed=4)]
    parts[1][222] = 0.0
    if value != 0.0:
        parts[1][222, 2] = value
    write_clip_retrieval(tmp_path / "emb", parts)
    with pytest.raises(
        BuildError,
        match=rf"img_emb_1\.npy row 222 \(id '/data/images/00522\.jpg', row 522 of the import\) {what}",
    ):
        import_embeddings(opts(tmp_path / "emb", tmp_path / "index"))
    assert current(tmp_path / "index") is None


def _bundle(path: Path, fingerprint: str, dim: int) -> Path:
    path.mkdir()
    manifest = {
        "schema_version": 1,
        "kind": "clip-onnx-bundle",
        "model_fingerprint": fingerprint,
        "embed_dim": dim,
        "text": {},
        "image": {},
        "precisions": ["fp32"],
        "files": {},
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_bundle_gives_fingerprint_and_checks_dim(tmp_path: Path) -> None:
    npy, ids = write_npy_jsonl(tmp_path / "src", normalized_vectors(5, DIM))
    wrong = _bundle(tmp_path / "b32", OTHER_FP, 32)
    with pytest.raises(BuildError, match="the vectors have dim 16, but the bundle's model embeds to 32"):
        import_embeddings(
            opts(npy, tmp_path / "index", ids=str(ids), model_fingerprint=None, bundle=str(wrong))
        )
    right = _bundle(tmp_path / "b16", OTHER_FP, DIM)
    import_embeddings(opts(npy, tmp_path / "index", ids=str(ids), model_fingerprint=None, bundle=str(right)))
    assert read_version(tmp_path / "index")["manifest"]["model_fingerprint"] == OTHER_FP
    with pytest.raises(UsageError, match="is not the model of --bundle"):
        import_embeddings(opts(npy, tmp_path / "index", ids=str(ids), bundle=str(right)))


def test_fingerprint_required_and_checked(tmp_path: Path) -> None:
    npy, ids = write_npy_jsonl(tmp_path, normalized_vectors(5, DIM))
    with pytest.raises(UsageError, match="--model-fingerprint or --bundle is required"):
        import_embeddings(opts(npy, tmp_path / "index", ids=str(ids), model_fingerprint=None))
    with pytest.raises(UsageError, match=r"expected sha256:<64 hex digits>"):
        import_embeddings(opts(npy, tmp_path / "index", ids=str(ids), model_fingerprint="ViT-B-32"))


def test_another_models_index_refused_unless_full(tmp_path: Path) -> None:
    npy, ids = write_npy_jsonl(tmp_path / "src", normalized_vectors(5, DIM))
    out = tmp_path / "index"
    first = import_embeddings(opts(npy, out, ids=str(ids))).version
    with pytest.raises(BuildError, match=r"vectors of different models cannot be mixed\. Pass --full"):
        import_embeddings(opts(npy, out, ids=str(ids), model_fingerprint=OTHER_FP))
    assert current(out) == first
    second = import_embeddings(opts(npy, out, ids=str(ids), model_fingerprint=OTHER_FP, full=True))
    assert current(out) == second.version and second.previous_version == first


def test_reimport_prunes_like_a_build(tmp_path: Path) -> None:
    npy, ids = write_npy_jsonl(tmp_path / "src", normalized_vectors(5, DIM))
    out = tmp_path / "index"
    versions = [import_embeddings(opts(npy, out, ids=str(ids), keep_versions=2)).version for _ in range(3)]
    assert sorted(p.name for p in (out / "versions").iterdir()) == versions[1:]


def test_cli_exit_codes_and_messages(tmp_path: Path, cli) -> None:
    vectors = normalized_vectors(20, DIM, seed=4)
    npy, ids = write_npy_jsonl(tmp_path / "src", vectors)
    out = tmp_path / "index"
    r = cli("import-embeddings", "--source", npy, "--ids", ids, "--out", out, "--model-fingerprint", FP)
    assert r.rc == 0, r.err
    assert r.out.startswith("published version ") and "20 items imported" in r.out
    r = cli("import-embeddings", "--source", npy, "--out", out, "--model-fingerprint", FP, "--json")
    assert (
        r.rc == 2 and r.err.startswith("error: --source") and "--ids FILE" in r.err and r.err.count("\n") == 1
    )
    r = cli("import-embeddings", "--source", npy, "--ids", ids, "--out", out, "--model-fingerprint", OTHER_FP)
    assert r.rc == 1 and "cannot be mixed" in r.err
    r = cli(
        "import-embeddings", "--source", npy, "--ids", ids, "--out", out, "--model-fingerprint", FP, "--json"
    )
    assert r.rc == 0 and r.json()["count"] == 20


@pytest.mark.s3
def test_clip_retrieval_layout_on_s3(s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the S3 files are downloaded
    parts = [normalized_vectors(n, DIM, seed=10 + n) for n in (30, 12)]
    local = tmp_path / "emb"
    write_clip_retrieval(local, parts)
    bucket = s3_server.make_bucket()
    client = s3_server.client()
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"runs/emb/{path.relative_to(local).as_posix()}")
    src, dest = f"s3://{bucket}/runs/emb", f"s3://{bucket}/indexes/imported"
    r = import_embeddings(
        ImportOptions(source=src, out=dest, model_fingerprint=FP, image_root=f"s3://{bucket}/images")
    )
    v = read_version(dest)
    assert r.count == 42 and v["manifest"]["source"] == f"s3://{bucket}/images"
    index = load_index(dest, cache_dir=tmp_path / "cache")
    assert index.search(parts[1][5], k=1)[0][0].item["id"] == "/data/images/00035.jpg"
    assert not list((tmp_path / "tmp").glob("import-embeddings-*"))  # downloads removed
    npy, ids = write_npy_jsonl(tmp_path / "npy", parts[0])  # a single .npy + JSONL on S3
    for path in (npy, ids):
        client.upload_file(str(path), bucket, f"runs/one/{path.name}")
    one = f"s3://{bucket}/runs/one"
    r = import_embeddings(
        ImportOptions(source=f"{one}/vectors.npy", out=dest, ids=f"{one}/ids.jsonl", model_fingerprint=FP)
    )
    assert r.count == 30 and read_version(dest)["items"][4]["id"] == "img4"
