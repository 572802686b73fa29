"""``GET /duplicates``: the groups of the version's duplicates.jsonl, paginated and bounded, shaped like
/search results; read on first use (not when the index loads); a version without the file answers
``available: false``; the API key applies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handler.routes import duplicates as route
from tests.handler.conftest import make_client, make_settings, write_index
from tests.handler.core.test_duplicates import brute_force_groups

SETTING = {"threshold": 0.95, "k": 16}


def with_copies(items: list[dict[str, Any]], vectors: np.ndarray) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The demo collection plus 7 exact copies of item 0 and 2 slightly changed copies of item 5."""
    rng = np.random.default_rng(0)
    rows, vecs = list(items), [*vectors]
    for i in range(7):
        rows.append({**items[0], "id": f"copies/same_{i}.png"})
        vecs.append(vectors[0])
    for i in range(2):
        v = vectors[5] + 0.002 * rng.standard_normal(vectors.shape[1]).astype(np.float32)
        rows.append({**items[5], "id": f"copies/near_{i}.png"})
        vecs.append(v / np.linalg.norm(v))
    return rows, np.asarray(vecs, dtype=np.float32)


@pytest.fixture(scope="module")
def dup_index(
    tmp_path_factory: pytest.TempPathFactory, demo_embedder: Any, demo_collection: Any
) -> tuple[Path, list[dict[str, Any]], np.ndarray]:
    images_dir, items, vectors = demo_collection
    rows, vecs = with_copies(items, vectors)
    index_dir = tmp_path_factory.mktemp("dup-index")
    write_index(index_dir, demo_embedder, rows, vecs, "v1", str(images_dir), duplicates=SETTING)
    return index_dir, rows, vecs


@pytest.fixture(scope="module")
def client(demo_bundle: Path, dup_index: Any) -> Any:
    return make_client(make_settings(demo_bundle, dup_index[0]))


def all_groups(client: Any, limit: int) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    while True:
        r = client.get("/duplicates", params={"limit": limit, "offset": len(groups), "per_group": 100})
        assert r.status_code == 200, r.text
        body = r.json()
        groups += body["groups"]
        if not body["groups"]:
            assert len(groups) == body["total"]
            return groups


def test_groups_match_brute_force_across_pages(client: Any, dup_index: Any) -> None:
    _, rows, vecs = dup_index
    assert route._cache.get(client.app.state.service.index) is None  # not read when the index loaded
    expected = {frozenset(rows[x]["id"] for x in g) for g in brute_force_groups(vecs, SETTING["threshold"])}
    groups = all_groups(client, limit=3)
    assert {frozenset(i["id"] for i in g["items"]) for g in groups} == expected
    assert route._cache.get(client.app.state.service.index) is not None
    assert [g["count"] for g in groups] == sorted((g["count"] for g in groups), reverse=True)
    zero = next(g for g in groups if items_of(g) & {rows[0]["id"]})
    assert {rows[0]["id"], *(f"copies/same_{i}.png" for i in range(7))} <= items_of(zero)
    near = next(g for g in groups if items_of(g) & {"copies/near_0.png"})
    assert {rows[5]["id"], "copies/near_0.png", "copies/near_1.png"} <= items_of(near)
    for g in groups:
        assert g["items"][0]["score"] == 1.0 and g["score"] == min(i["score"] for i in g["items"][1:])
        assert g["count"] == len(g["items"])
    item = zero["items"][0]
    assert set(item) == {"id", "uri", "score", "metadata", "image_url", "thumbnail_url"}
    assert item["image_url"].endswith("/image") and item["metadata"] == rows[0]["metadata"]


def items_of(group: dict[str, Any]) -> set[Any]:
    return {i["id"] for i in group["items"]}


def test_page_fields_and_per_group(client: Any, dup_index: Any) -> None:
    r = client.get("/duplicates", params={"limit": 1, "per_group": 2})
    assert r.status_code == 200
    body = r.json()
    assert {k: body[k] for k in ("available", "version", "threshold", "k", "limit", "offset")} == {
        "available": True,
        "version": "v1",
        "threshold": 0.95,
        "k": 16,
        "limit": 1,
        "offset": 0,
    }
    (group,) = body["groups"]
    assert group["count"] >= 8 and len(group["items"]) == 2
    assert client.get("/duplicates", params={"offset": body["total"]}).json()["groups"] == []


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 1000}, {"limit": "x"}, {"offset": -1}, {"per_group": 0}, {"per_group": 101}],
)
def test_bad_parameters_are_400(client: Any, params: dict[str, Any]) -> None:
    r = client.get("/duplicates", params=params)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    assert next(iter(params)) in r.json()["error"]["message"]


def test_a_version_without_the_file(demo_client: Any) -> None:
    r = demo_client.get("/duplicates")
    assert r.status_code == 200
    body = r.json()
    assert body["available"] is False and body["total"] == 0 and body["groups"] == []
    assert body["threshold"] is None and body["version"] == "v0001"


def test_api_key_and_openapi(demo_bundle: Path, dup_index: Any) -> None:
    client = make_client(make_settings(demo_bundle, dup_index[0], API_KEY="s3cret-key-123"))
    assert client.get("/duplicates").status_code == 401
    assert client.get("/duplicates", headers={"x-api-key": "s3cret-key-123"}).status_code == 200
    spec = client.get("/openapi.json", headers={"x-api-key": "s3cret-key-123"}).json()
    params = {p["name"]: p["schema"] for p in spec["paths"]["/duplicates"]["get"]["parameters"]}
    assert params["limit"]["maximum"] == route.MAX_LIMIT and params["per_group"]["maximum"] == 100
    assert "DuplicatesResponse" in spec["components"]["schemas"]


def test_a_corrupt_file_is_an_index_error(demo_bundle: Path, dup_index: Any, tmp_path: Path) -> None:
    import shutil

    index_dir = tmp_path / "index"
    shutil.copytree(dup_index[0], index_dir)
    client = make_client(make_settings(demo_bundle, index_dir))
    path = index_dir / "versions/v1/duplicates.jsonl"
    path.write_bytes(path.read_bytes().replace(b'"items"', b'"itemz"'))
    r = client.get("/duplicates")
    assert r.status_code == 503 and "duplicates.jsonl" in r.json()["error"]["message"]


@pytest.mark.s3
def test_s3_index_downloads_the_file_on_first_use(
    s3_server: Any, demo_bundle: Path, demo_embedder: Any, demo_collection: Any, tmp_path: Path
) -> None:
    from tests.handler.test_lambda import invoke, lambda_module, load_event

    images_dir, items, vectors = demo_collection
    rows, vecs = with_copies(items[:20], vectors[:20])
    index_uri = f"s3://{s3_server.make_bucket()}/index"
    write_index(index_uri, demo_embedder, rows, vecs, "v1", str(images_dir), duplicates=SETTING)
    event = load_event("health.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/duplicates"
    event["rawQueryString"] = "limit=5"
    cache = tmp_path / "cache"
    with lambda_module(MODEL_URI=demo_bundle, INDEX_URI=index_uri, CACHE_DIR=cache) as module:
        assert module.state.healthy(), module.state.problems()
        assert any(cache.rglob("*.hnsw")) and not any(cache.rglob("duplicates.jsonl"))
        status, _, body = invoke(module, event)
        assert status == 200 and body["available"] is True and any(cache.rglob("duplicates.jsonl"))
        expected = {frozenset(rows[x]["id"] for x in g) for g in brute_force_groups(vecs, 0.95)}
        assert {frozenset(i["id"] for i in g["items"]) for g in body["groups"]} == expected
        assert invoke(module, event)[2] == body
