"""``filter`` on POST /search: results only from matching items, k of them when k match (equal to exact
search over the subset), JSON / form / raw-image forms, 400 ``invalid_filter`` errors, an index built
before the image facts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.handler.conftest import make_client, make_settings, render_png, write_index

N = 3000


def _search(client: Any, **body: Any) -> dict[str, Any]:
    r = client.post("/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()


# -- the demo index (rendered shapes, sidecar metadata colour/shape) -----------------------------------------


def test_meta_filter_on_a_text_query(demo_client: Any) -> None:
    body = _search(demo_client, text="a red circle", k=5, filter={"meta": {"shape": "square"}})
    assert [r["metadata"]["shape"] for r in body["results"]] == ["square"] * 5
    assert body["query"]["filter"] == {"meta": {"shape": "square"}}
    assert body["query"]["matching"] == 256 // 4  # 4 shapes


def test_k_larger_than_the_matching_items(demo_client: Any) -> None:
    spec = {"meta": {"colour": "red", "shape": "circle"}}
    body = _search(demo_client, text="a blue square", k=20, filter=spec)
    assert body["query"]["matching"] == 8 and len(body["results"]) == 8
    assert {(r["metadata"]["colour"], r["metadata"]["shape"]) for r in body["results"]} == {("red", "circle")}


def test_path_prefix_and_ext(demo_client: Any) -> None:
    body = _search(demo_client, text="a red circle", k=50, filter={"path_prefix": "set_b/"})
    assert body["results"] and all(r["id"].startswith("set_b/") for r in body["results"])
    assert body["query"]["matching"] == 128  # set_b/ and set_b/nested/
    assert _search(demo_client, text="a", filter={"ext": "png"})["results"] == []  # the demo is JPEG


def test_more_like_this_excludes_the_item(demo_client: Any) -> None:
    first = _search(demo_client, text="a red circle", k=1)["results"][0]
    body = _search(demo_client, id=first["id"], k=10, filter={"meta": {"colour": "red", "shape": "circle"}})
    ids = [r["id"] for r in body["results"]]
    assert len(ids) == 7 and first["id"] not in ids and body["query"]["matching"] == 7


def test_filter_in_form_and_raw_image_query(demo_client: Any) -> None:
    r = demo_client.post("/search", data={"text": "a red circle", "k": "3", "filter": "meta.shape:square"})
    assert r.status_code == 200, r.text
    assert [x["metadata"]["shape"] for x in r.json()["results"]] == ["square"] * 3
    r = demo_client.post("/search", data={"text": "a", "filter": '{"meta": {"colour": "blue"}}'})
    assert {x["metadata"]["colour"] for x in r.json()["results"]} == {"blue"}
    png = render_png("blue", "square", seed=7)
    r = demo_client.post(
        "/search?k=4&filter=meta.colour:red", content=png, headers={"content-type": "image/png"}
    )
    assert r.status_code == 200, r.text
    assert [x["metadata"]["colour"] for x in r.json()["results"]] == ["red"] * 4


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"colour": "red"}, "filter.colour: unknown field"),
        ({"taken": {"from": "2024-13-01"}}, "filter.taken.from: not a date"),
        ({"width": {"min": 9, "max": 1}}, "'min' 9 is greater than 'max' 1"),
        ({"meta": {"colour": {"in": []}}}, "filter.meta.colour"),
        ("colour:red", "unknown filter term 'colour'"),
        ([], "'filter' must be an object"),
    ],
)
def test_bad_filters_are_400(demo_client: Any, spec: Any, message: str) -> None:
    r = demo_client.post("/search", json={"text": "a", "filter": spec})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_filter" and message in err["message"], err


def test_openapi_documents_the_filter(demo_client: Any) -> None:
    doc = demo_client.get("/openapi.json").json()
    body = doc["paths"]["/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "filter" in body["properties"]
    text = str(doc)
    assert "path_prefix" in text and "taken" in text


# -- a larger index: exactness under a 1% filter, old rows --------------------------------------------------


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, demo_embedder: Any, demo_bundle: Path) -> Any:
    rng = np.random.default_rng(4)
    dim = demo_embedder.dim
    centres = rng.standard_normal((20, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 20, N)] + 0.5 * rng.standard_normal((N, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items: list[dict[str, Any]] = []
    for i in range(N):
        row: dict[str, Any] = {"id": f"g{i % 100:02d}/img_{i:05d}.jpg", "uri": f"/x/g{i % 100:02d}/{i}.jpg"}
        if i % 2:  # every other row as a builder before the image facts wrote it
            row.update(ext="jpg", width=100 + i, height=50, taken_at=f"20{10 + i % 15}-06-01T00:00:00")
        row["metadata"] = {"group": i % 100}
        items.append(row)
    index_dir = tmp_path_factory.mktemp("filter-index")
    write_index(index_dir, demo_embedder, items, vectors, "v0001", None)
    with make_client(make_settings(demo_bundle, index_dir)) as client:
        yield client, vectors


def test_one_percent_filter_returns_k_exact_results(big: Any) -> None:
    client, vectors = big
    rng = np.random.default_rng(8)
    allowed = np.array([i % 100 == 42 for i in range(N)])
    for _ in range(3):
        q = vectors[rng.integers(N)] + 0.3 * rng.standard_normal(vectors.shape[1]).astype(np.float32)
        q /= np.linalg.norm(q)
        body = _search(client, embedding=[float(x) for x in q], k=10, filter={"meta": {"group": 42}})
        scores = np.where(allowed, vectors @ q, -np.inf)
        expected = [f"g42/img_{i:05d}.jpg" for i in np.argsort(-scores)[:10]]
        assert [r["id"] for r in body["results"]] == expected
        assert body["query"]["matching"] == 30
        page = _search(client, embedding=[float(x) for x in q], k=5, offset=5, filter="meta.group:42")
        assert [r["id"] for r in page["results"]] == expected[5:]


def test_fields_missing_from_old_rows_do_not_match(big: Any) -> None:
    client, vectors = big
    q = [float(x) for x in vectors[0]]
    body = _search(client, embedding=q, k=100, filter={"width": {"min": 0}})
    assert body["query"]["matching"] == N // 2
    assert all(int(r["id"][-9:-4]) % 2 == 1 for r in body["results"])
    body = _search(client, embedding=q, k=10, filter={"taken": {"from": "2024-01-01"}})
    assert body["query"]["matching"] == sum(1 for i in range(1, N, 2) if i % 15 >= 14)
    assert _search(client, embedding=q, filter={"ext": "jpg"})["query"]["matching"] == N  # from the uri
    assert _search(client, embedding=q, filter={"gps": False})["query"]["matching"] == 0
