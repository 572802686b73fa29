"""Issue 17 #1 and #3 through the API: compound queries (``terms``) and ``dedupe`` on POST /search."""

from __future__ import annotations

import base64
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handler.core.dedupe import DEFAULT_THRESHOLD
from tests.handler.conftest import make_client, make_settings, render_png


def _search(client: Any, **body: Any) -> dict[str, Any]:
    r = client.post("/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _labels(results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["metadata"]["colour"], r["metadata"]["shape"]) for r in results]


def _b64(colour: str, shape: str, seed: int = 5) -> str:
    return base64.b64encode(render_png(colour, shape, seed=seed)).decode()


# -- compound queries ----------------------------------------------------------------------------------------


def test_one_term_is_the_single_query(demo_client: Any) -> None:
    single = _search(demo_client, text="a red circle", k=10)
    terms = _search(demo_client, terms=[{"text": "a red circle"}], k=10)
    assert [r["id"] for r in terms["results"]] == [r["id"] for r in single["results"]]
    assert [r["score"] for r in terms["results"]] == [r["score"] for r in single["results"]]
    assert terms["query"] == {
        "type": "terms",
        "terms": [{"type": "text", "text": "a red circle", "truncated": False, "weight": 1.0}],
        "k": 10,
        "offset": 0,
    }
    assert "duplicates" not in terms["results"][0]  # only with dedupe


def test_text_and_image_rank_items_with_both_properties_first(demo_client: Any) -> None:
    """A colour from the text, a shape from the image: the items having both (red squares) come before the
    items having one (red non-squares, squares of other colours)."""
    body = _search(
        demo_client,
        terms=[{"text": "a red shape", "weight": 1.0}, {"image": _b64("white", "square"), "weight": 0.7}],
        k=30,
    )
    labels = _labels(body["results"])
    both = [i for i, (c, s) in enumerate(labels) if c == "red" and s == "square"]
    one = [i for i, (c, s) in enumerate(labels) if (c == "red") != (s == "square")]
    assert len(both) == 8, labels  # the index holds 8 red squares
    assert max(both) < min(one), labels
    assert [t["type"] for t in body["query"]["terms"]] == ["text", "image"]
    assert body["query"]["terms"][1]["width"] == 96


def test_a_negative_term_demotes_its_class(demo_client: Any) -> None:
    """ "red" ranks the 32 red items of all shapes first; "red" - 0.5 x "a circle" puts the red circles after
    the 24 other red items."""

    def ranked(terms: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return _labels(_search(demo_client, terms=terms, k=40)["results"])

    before = ranked([{"text": "red"}])
    after = ranked([{"text": "red"}, {"text": "a circle", "weight": -0.5}])
    circles_before = [i for i, lab in enumerate(before) if lab == ("red", "circle")]
    circles_after = [i for i, lab in enumerate(after) if lab == ("red", "circle")]
    assert min(circles_before) < 8 and len([i for i in circles_before if i < 24]) >= 3, before
    assert all(c == "red" and s != "circle" for c, s in after[:24]), after
    assert len(circles_after) == 8 and np.mean(circles_after) > np.mean(circles_before) + 5, (before, after)


def test_id_and_embedding_terms(demo_client: Any, demo_embedder: Any) -> None:
    first = _search(demo_client, text="a yellow triangle", k=1)["results"][0]
    vec = demo_embedder.embed_texts(["a yellow triangle"])[0]
    body = _search(
        demo_client,
        terms=[{"id": first["id"]}, {"embedding": [float(x) * 7 for x in vec], "weight": 0.5}],
        k=5,
    )
    assert first["id"] not in [r["id"] for r in body["results"]]  # an id term is not a result
    assert Counter(_labels(body["results"]))[("yellow", "triangle")] >= 4
    assert body["query"]["terms"][0] == {"type": "id", "id": first["id"], "weight": 1.0}
    assert body["query"]["terms"][1] == {"type": "embedding", "dim": demo_embedder.dim, "weight": 0.5}


def test_terms_use_one_encoder_call_per_tower(
    demo_client: Any, demo_state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emb = demo_state.embedder
    calls: list[tuple[str, int]] = []
    text, pixels = emb.embed_tokens, emb.embed_pixels
    monkeypatch.setattr(emb, "embed_tokens", lambda ids: calls.append(("text", len(ids))) or text(ids))
    monkeypatch.setattr(emb, "embed_pixels", lambda px: calls.append(("image", len(px))) or pixels(px))
    terms = [
        {"text": "a red circle"},
        {"image": _b64("blue", "square")},
        {"text": "a green star", "weight": -0.5},
        {"image": _b64("red", "star"), "weight": 0.5},
        {"text": "a black square", "weight": 0.2},
    ]
    _search(demo_client, terms=terms, k=3)
    assert sorted(calls) == [("image", 2), ("text", 3)]


@pytest.mark.parametrize(
    ("body", "status", "code", "needle"),
    [
        ({"terms": []}, 400, "invalid_request", "1 to 16 terms"),
        ({"terms": [{"text": "a"}] * 17}, 400, "invalid_request", "1 to 16 terms"),
        ({"terms": {"text": "a"}}, 400, "invalid_request", "'terms' must be an array"),
        ({"terms": ["a dog"]}, 400, "invalid_request", "'terms'[0] must be an object"),
        (
            {"terms": [{"text": "a", "weight": 0}, {"text": "b", "weight": 0.0}]},
            400,
            "invalid_request",
            "all zero",
        ),
        ({"terms": [{"text": "a", "weight": "0.5"}]}, 400, "invalid_request", "'terms'[0]: 'weight'"),
        ({"terms": [{"text": "a", "weight": True}]}, 400, "invalid_request", "'terms'[0]: 'weight'"),
        # 1e999 parses as infinity
        ('{"terms": [{"text": "a", "weight": 1e999}]}', 400, "invalid_request", "'terms'[0]: 'weight'"),
        ('{"terms": [{"text": "a", "weight": NaN}]}', 400, "invalid_json", "NaN"),
        ({"terms": [{"text": "a", "weight": 1e4}]}, 400, "invalid_request", "'terms'[0]: 'weight'"),
        (
            {"terms": [{"text": "a"}, {"text": "b", "id": 1}]},
            400,
            "invalid_request",
            "'terms'[1]: give exactly one",
        ),
        ({"terms": [{"weight": 1}]}, 400, "invalid_request", "'terms'[0]: give exactly one"),
        (
            {"terms": [{"text": "a", "colour": "red"}]},
            400,
            "invalid_request",
            "'terms'[0]: unknown field(s) 'colour'",
        ),
        ({"terms": [{"text": " "}]}, 400, "invalid_text", "'terms[0].text' is empty"),
        ({"terms": [{"image": "@@@@"}]}, 400, "invalid_base64", "terms[0].image"),
        ({"terms": [{"embedding": [1.0, 2.0]}]}, 400, "invalid_embedding", "'terms'[0] has 2 values"),
        ({"terms": [{"embedding": []}]}, 400, "invalid_embedding", "'terms'[0]: 'embedding' is empty"),
        ({"terms": [{"text": "a"}, {"id": "no/such.jpg"}]}, 404, "unknown_id", "'terms'[1]: no item with id"),
        (
            {"terms": [{"text": "a red circle"}, {"text": "a red circle", "weight": -1}]},
            400,
            "invalid_embedding",
            "cancel",
        ),
        ({"terms": [{"text": "a"}], "text": "b"}, 400, "invalid_request", "give exactly one"),
        ({"text": "a", "dedupe": 0.9}, 400, "invalid_request", "'dedupe'"),
        ({"text": "a", "dedupe": {"threshold": 1.5}}, 400, "invalid_request", "'dedupe'"),
        ({"text": "a", "dedupe": {"threshold": 0.9, "x": 1}}, 400, "invalid_request", "'dedupe'"),
    ],
)
def test_bad_terms_and_dedupe(demo_client: Any, body: Any, status: int, code: str, needle: str) -> None:
    if isinstance(body, str):  # numbers json.dumps cannot write
        r = demo_client.post("/search", content=body, headers={"content-type": "application/json"})
    else:
        r = demo_client.post("/search", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert needle in r.json()["error"]["message"], r.json()


def test_openapi_documents_terms_and_dedupe(demo_client: Any) -> None:
    spec = demo_client.get("/openapi.json").json()
    schema = spec["paths"]["/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    props = schema["properties"]
    assert "terms" in props and "dedupe" in props
    assert "$ref" not in str(schema) and "$defs" not in schema  # nested models inlined: refs would dangle
    term = next(alt for alt in props["terms"]["anyOf"] if alt.get("type") == "array")["items"]
    assert set(term["properties"]) == {"text", "image", "id", "embedding", "weight"}
    assert term["properties"]["weight"]["default"] == 1.0
    dedupe = next(alt for alt in props["dedupe"]["anyOf"] if alt.get("type") == "object")
    assert dedupe["properties"]["threshold"]["default"] == DEFAULT_THRESHOLD
    result = spec["components"]["schemas"]["Result"]["properties"]
    assert "duplicates" in result


# -- dedupe --------------------------------------------------------------------------------------------------


def test_dedupe_on_the_demo_index_still_returns_k_distinct_results(demo_client: Any) -> None:
    plain = _search(demo_client, text="a red circle", k=10)
    body = _search(demo_client, text="a red circle", k=10, dedupe=True)
    assert body["query"]["dedupe"] == DEFAULT_THRESHOLD
    assert len(body["results"]) == 10 and all("duplicates" in r for r in body["results"])
    assert [r["id"] for r in body["results"]] == [r["id"] for r in plain["results"]]  # distinct renders stay


def test_eight_copies_of_one_image_come_back_as_one_result(
    tmp_path: Path, demo_bundle: Path, demo_collection: Any
) -> None:
    """The issue's user: 8 identical copies of one photo filled the top 8. Indexed by the builder."""
    from index_builder.cli import main as build

    images_dir, items, _ = demo_collection
    src = tmp_path / "photos"
    picked = [it for it in items if it["metadata"]["colour"] in ("red", "blue", "green")][:48]
    for it in picked:
        dest = src / it["id"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(images_dir / it["id"], dest)
    original = picked[0]
    data = (images_dir / original["id"]).read_bytes()
    for i in range(1, 8):
        (src / f"copy_{i}.jpg").write_bytes(data)
    out = tmp_path / "index"
    argv = ["build", "--source", src, "--bundle", demo_bundle, "--out", out, "--threads", "2", "--quiet"]
    assert build([str(a) for a in argv]) == 0
    client = make_client(make_settings(demo_bundle, out))
    copies = {original["id"], *(f"copy_{i}.jpg" for i in range(1, 8))}
    query = base64.b64encode(data).decode()
    plain = client.post("/search", json={"image": query, "k": 8}).json()["results"]
    assert {r["id"] for r in plain} == copies  # the problem: the copies fill the top 8
    r = client.post("/search", json={"image": query, "k": 8, "dedupe": True})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 8
    assert results[0]["id"] in copies and set(results[0]["duplicates"]) == copies - {results[0]["id"]}
    assert len(results[0]["duplicates"]) == 7
    assert not {r["id"] for r in results[1:]} & copies and all(r["duplicates"] == [] for r in results[1:])


def test_each_query_kind_is_searched_at_its_calibrated_ef(
    demo_client: Any, demo_state: Any, demo_embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Texts at the text ef, images and "more like this" at the image ef, raw vectors at the widest."""
    from handler.core.shards import Shard

    [shard] = demo_state.index.shards.shards
    monkeypatch.setattr(shard, "ef_by_query", {"image": 23, "text": 61})
    monkeypatch.setattr(shard, "ef", 61)
    seen: list[int] = []
    real = Shard.knn
    monkeypatch.setattr(
        Shard, "knn", lambda s, q, want, ef, allowed=None: (seen.append(ef), real(s, q, want, ef, allowed))[1]
    )
    first = _search(demo_client, text="a red circle", k=3)["results"][0]["id"]
    vec = [float(x) for x in demo_embedder.embed_texts(["a red circle"])[0]]
    for body, ef in (
        ({"text": "a red circle"}, 61),
        ({"id": first}, 23),
        ({"terms": [{"id": first}, {"image": base64.b64encode(render_png("red", "circle")).decode()}]}, 23),
        ({"embedding": vec}, 61),
        ({"terms": [{"text": "a red circle"}, {"id": first}]}, 61),
        ({"text": "a red circle", "ef": 40}, 40),
    ):
        seen.clear()
        _search(demo_client, k=3, **body)
        assert seen and set(seen) == {ef}, (body, seen)
    seen.clear()
    r = demo_client.post("/search", files={"image": ("q.png", render_png("blue", "square"), "image/png")})
    assert r.status_code == 200 and set(seen) == {23}
