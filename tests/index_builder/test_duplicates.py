"""Near-duplicate groups at build time: write_version writes duplicates.jsonl from its HNSW graph (listed in
the manifest with its size / sha256, counted in stats), the build option turns it on and off, and
``python -m index_builder duplicates DEST`` prints the groups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from handler.core.duplicates import DEFAULT_DUPLICATE_THRESHOLD, find_duplicate_groups, read_duplicates
from handler.core.index import load_index
from handler.core.storage import file_digest, open_store
from index_builder.publish import publish
from index_builder.version_write import write_version
from tests.handler.core.test_duplicates import brute_force_groups, planted
from tests.index_builder.conftest import build_args, collection, current, read_version

FP = "sha256:" + "cd" * 32


def fields(**extra: Any) -> dict[str, Any]:
    return {"model_fingerprint": FP, "source": None, **extra}


def test_write_version_writes_the_groups_of_its_hnsw_graph(tmp_path: Path) -> None:
    vectors = planted(120, 32, [3, 2, 5], noise=0.15, seed=4)
    items = [{"id": f"img-{i}" if i % 2 else i} for i in range(len(vectors))]
    setting = {"threshold": 0.95, "k": 16}
    m = write_version(
        tmp_path, "v1", vectors=vectors, items=items, manifest_fields=fields(duplicates=setting), threads=1
    )
    path = tmp_path / "versions/v1/duplicates.jsonl"
    digest, size = file_digest(path)
    assert m["files"]["duplicates.jsonl"] == {"sha256": digest, "size": size}
    assert m["duplicates"] == setting and m["stats"]["duplicate_groups"] == 3
    groups = read_duplicates(path)
    ids = [it["id"] for it in items]
    assert {frozenset(g["items"]) for g in groups} == {
        frozenset(ids[x] for x in g) for g in brute_force_groups(vectors, 0.95)
    }
    assert [g["items"] for g in groups] == [
        [ids[x] for x in g.labels] for g in find_duplicate_groups(vectors, 0.95, threads=1)
    ]
    publish(tmp_path, "v1", m)
    assert load_index(str(tmp_path)).count == len(vectors)  # a local load checks every listed file


def test_write_version_without_the_setting_writes_no_file(tmp_path: Path) -> None:
    vectors = planted(20, 8, [2], noise=0.1)
    items = [{"id": i} for i in range(len(vectors))]
    m = write_version(tmp_path, "v1", vectors=vectors, items=items, manifest_fields=fields(), threads=1)
    assert "duplicates.jsonl" not in m["files"] and "duplicate_groups" not in m["stats"]
    assert not (tmp_path / "versions/v1/duplicates.jsonl").exists()
    m = write_version(
        tmp_path,
        "v2",
        vectors=np.zeros((0, 8), np.float32),
        items=[],
        manifest_fields=fields(duplicates={"threshold": 0.9, "k": 4}),
    )
    assert m["stats"]["duplicate_groups"] == 0 and m["files"]["duplicates.jsonl"]["size"] == 0
    for bad in ({"threshold": 1.5, "k": 4}, {"threshold": 0.9}, {"threshold": 0.9, "k": 0}, 0.9):
        with pytest.raises(ValueError, match=r"threshold|k|duplicates"):
            write_version(
                tmp_path, "v3", vectors=vectors, items=items, manifest_fields=fields(duplicates=bad)
            )


def add_copies(src: Path, original: Path) -> list[Path]:
    """Three byte-identical copies and a resized re-encoded one of ``original``, in a sub-folder."""
    (src / "copies").mkdir()
    copies = []
    for i in range(3):
        copies.append(src / "copies" / f"same_{i}.jpg")
        copies[-1].write_bytes(original.read_bytes())
    with Image.open(original) as img:
        small = src / "copies" / "smaller.png"
        img.resize((img.width - 9, img.height - 9)).save(small)
    return [*copies, small]


def test_build_finds_copies_and_the_cli_prints_them(demo_bundle: Path, tmp_path: Path, cli) -> None:
    src, dest = tmp_path / "src", tmp_path / "index"
    paths = collection(src, 12, seed=21)
    copies = add_copies(src, paths[0])
    assert cli(*build_args(src, demo_bundle, dest)).rc == 0
    v = read_version(dest)
    assert v["manifest"]["duplicates"] == {"threshold": DEFAULT_DUPLICATE_THRESHOLD, "k": 16}
    assert "duplicates.jsonl" in v["manifest"]["files"] and v["manifest"]["stats"]["duplicate_groups"] >= 1
    r = cli("duplicates", dest, "--json")
    assert r.rc == 0, r.err
    out = r.json()
    assert out["version"] == v["version"] and out["total"] == len(out["groups"]) >= 1
    assert out["threshold"] == DEFAULT_DUPLICATE_THRESHOLD
    planted_ids = {p.relative_to(src).as_posix() for p in [paths[0], *copies]}
    group = next(g for g in out["groups"] if planted_ids & {i["id"] for i in g["items"]})
    assert planted_ids <= {i["id"] for i in group["items"]}  # the copies and the original, together
    assert group["items"][0]["score"] == 1.0 and group["count"] == len(group["items"])
    assert all(i["uri"] == str(src / i["id"]) for i in group["items"])
    r = cli("duplicates", dest, "--limit", 1)
    assert r.rc == 0 and r.out.splitlines()[0].startswith(f"{dest} version {v['version']}: ")
    assert "group 1: " in r.out and "group 2: " not in r.out


def test_build_option_and_rebuilds(demo_bundle: Path, tmp_path: Path, cli) -> None:
    src, dest = tmp_path / "src", tmp_path / "index"
    paths = collection(src, 8, seed=22)
    add_copies(src, paths[1])
    assert cli(*build_args(src, demo_bundle, dest, "--no-duplicates")).rc == 0
    v1 = current(dest)
    assert "duplicates.jsonl" not in read_version(dest)["manifest"]["files"]
    r = cli("duplicates", dest)
    assert r.rc == 1 and len(r.err.strip().splitlines()) == 1 and "without the duplicate finder" in r.err
    # turning it on publishes (no image changed), the same settings again do not, another threshold does
    r = cli(*build_args(src, demo_bundle, dest, "--json"))
    assert r.rc == 0 and r.json()["published"] is True and current(dest) != v1
    assert cli(*build_args(src, demo_bundle, dest, "--json")).json()["published"] is False
    r = cli(*build_args(src, demo_bundle, dest, "--duplicate-threshold", 0.99, "--json"))
    assert r.json()["published"] is True
    assert read_version(dest)["manifest"]["duplicates"]["threshold"] == 0.99
    for bad in ("0", "1.5", "x"):
        r = cli(*build_args(src, demo_bundle, dest, "--duplicate-threshold", bad))
        assert r.rc == 2 and "--duplicate-threshold" in r.err


def test_parallel_build_writes_the_groups_too(demo_bundle: Path, tmp_path: Path, cli) -> None:
    src, dest = tmp_path / "src", tmp_path / "index"
    paths = collection(src, 8, seed=23)
    add_copies(src, paths[2])
    r = cli(*build_args(src, demo_bundle, dest, "--parallel", 1, "--duplicate-threshold", 0.97))
    assert r.rc == 0, r.err
    m = read_version(dest)["manifest"]
    assert m["duplicates"] == {"threshold": 0.97, "k": 16} and m["stats"]["duplicate_groups"] >= 1
    assert cli("duplicates", dest).rc == 0


def test_cli_without_an_index(tmp_path: Path, cli) -> None:
    r = cli("duplicates", tmp_path / "nothing")
    assert r.rc == 1 and r.out == "" and len(r.err.strip().splitlines()) == 1 and "no index" in r.err
    assert cli("duplicates", tmp_path, "--offset", -1).rc == 2
    assert cli("duplicates", tmp_path, "--limit", 0).rc == 2


def test_cli_refuses_a_corrupt_file(tmp_path: Path, cli) -> None:
    vectors = planted(20, 32, [2], noise=0.1)
    m = write_version(
        tmp_path,
        "v1",
        vectors=vectors,
        items=[{"id": i, "uri": f"/x/{i}.jpg"} for i in range(len(vectors))],
        manifest_fields=fields(duplicates={"threshold": 0.95, "k": 4}),
    )
    publish(tmp_path, "v1", m)
    r = cli("duplicates", tmp_path, "--json")
    assert r.rc == 0 and json.loads(r.out)["groups"][0]["items"][1]["uri"] == "/x/20.jpg"
    path = tmp_path / "versions/v1/duplicates.jsonl"
    path.write_bytes(path.read_bytes().replace(b"1.0", b"0.5"))
    r = cli("duplicates", tmp_path)
    assert r.rc == 1 and "does not match the manifest" in r.err
    assert open_store(str(tmp_path)).exists("versions/v1/duplicates.jsonl")
