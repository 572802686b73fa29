"""Every class of bad input gets its 4xx (or 413) with ``{"error": {"code", "message"}}``; never a 5xx."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.handler.conftest import make_client, make_settings, render_png

PNG = render_png("red", "circle")
B64 = base64.b64encode(PNG).decode()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's calling card)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _jpeg(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "red").save(buf, format="JPEG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_error(r: Any, status: int, code: str | tuple[str, ...]) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    codes = (code,) if isinstance(code, str) else code
    assert body["error"]["code"] in codes, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


SEARCH_JSON_CASES = [
    # (id, body, status, code)
    ("neither", {}, 400, "invalid_request"),
    ("neither-nulls", {"text": None, "image": None}, 400, "invalid_request"),
    ("text+image", {"text": "a", "image": B64}, 400, "invalid_request"),
    ("text+embedding", {"text": "a", "embedding": [0.1]}, 400, "invalid_request"),
    ("image+id", {"image": B64, "id": "img_00000.jpg"}, 400, "invalid_request"),
    ("all-four", {"text": "a", "image": B64, "embedding": [1.0], "id": 1}, 400, "invalid_request"),
    ("unknown-field", {"text": "a", "query": "b"}, 400, "invalid_request"),
    ("empty-text", {"text": ""}, 400, "invalid_text"),
    ("blank-text", {"text": "  \n\t "}, 400, "invalid_text"),
    ("nul-text", {"text": "a\x00b"}, 400, "invalid_text"),
    ("text-number", {"text": 5}, 400, "invalid_request"),
    ("text-list", {"text": ["a"]}, 400, "invalid_request"),
    ("k-zero", {"text": "a", "k": 0}, 400, "invalid_request"),
    ("k-101", {"text": "a", "k": 101}, 400, "invalid_request"),
    ("k-negative", {"text": "a", "k": -3}, 400, "invalid_request"),
    ("k-string", {"text": "a", "k": "5"}, 400, "invalid_request"),
    ("k-float", {"text": "a", "k": 2.5}, 400, "invalid_request"),
    ("k-bool", {"text": "a", "k": True}, 400, "invalid_request"),
    ("k-huge", {"text": "a", "k": 10**30}, 400, "invalid_request"),
    ("offset-negative", {"text": "a", "offset": -1}, 400, "invalid_request"),
    ("offset-1001", {"text": "a", "offset": 1001}, 400, "invalid_request"),
    ("offset-string", {"text": "a", "offset": "0"}, 400, "invalid_request"),
    ("min-score-string", {"text": "a", "min_score": "0.5"}, 400, "invalid_request"),
    ("min-score-2", {"text": "a", "min_score": 2}, 400, "invalid_request"),
    ("min-score-bool", {"text": "a", "min_score": False}, 400, "invalid_request"),
    ("ef-zero", {"text": "a", "ef": 0}, 400, "invalid_request"),
    ("ef-huge", {"text": "a", "ef": 1_000_000}, 400, "invalid_request"),
    ("image-not-base64", {"image": "this is not base64 !!!"}, 400, "invalid_base64"),
    ("image-bad-padding", {"image": "abcde"}, 400, "invalid_base64"),
    ("image-empty", {"image": ""}, 400, "invalid_base64"),
    ("image-data-uri-not-base64", {"image": "data:image/png,rawbytes"}, 400, "invalid_base64"),
    ("image-number", {"image": 12}, 400, "invalid_request"),
    ("image-not-an-image", {"image": _b64(b"hello, world: definitely not an image")}, 400, "invalid_image"),
    ("image-html", {"image": _b64(b"<html><body>hi</body></html>")}, 400, "invalid_image"),
    ("image-truncated-png", {"image": _b64(PNG[: len(PNG) // 2])}, 400, "invalid_image"),
    ("image-truncated-jpeg", {"image": _b64(_jpeg((300, 200))[:400])}, 400, "invalid_image"),
    ("image-header-only", {"image": _b64(PNG[:16])}, 400, "invalid_image"),
    ("image-bomb-header", {"image": _b64(_png_header_only(100_000, 100_000))}, 413, "image_too_large"),
    (
        "image-bomb-wide",
        {"image": _b64(_png_header_only(2**31 - 1, 1))},
        (400, 413),
        ("image_too_large", "invalid_image"),
    ),
    ("embedding-wrong-length", {"embedding": [0.1] * 127}, 400, "invalid_embedding"),
    ("embedding-too-long", {"embedding": [0.1] * 129}, 400, "invalid_embedding"),
    ("embedding-empty", {"embedding": []}, 400, "invalid_embedding"),
    ("embedding-zero", {"embedding": [0.0] * 128}, 400, "invalid_embedding"),
    ("embedding-strings", {"embedding": ["0.1"] * 128}, 400, "invalid_request"),
    ("embedding-bools", {"embedding": [True] * 128}, 400, "invalid_request"),
    ("embedding-nested", {"embedding": [[0.1]] * 128}, 400, "invalid_request"),
    ("embedding-object", {"embedding": {"a": 1}}, 400, "invalid_request"),
    ("embedding-overflow", {"embedding": [10**400] + [0.0] * 127}, 400, "invalid_embedding"),
    ("id-unknown", {"id": "no-such-item"}, 404, "unknown_id"),
    ("id-unknown-int", {"id": 123456}, 404, "unknown_id"),
    ("id-float", {"id": 1.5}, 400, "invalid_request"),
    ("id-bool", {"id": True}, 400, "invalid_request"),
    ("id-empty", {"id": ""}, 400, "invalid_request"),
    ("id-list", {"id": ["img_00000.jpg"]}, 400, "invalid_request"),
]


@pytest.mark.parametrize(
    ("body", "status", "code"), [c[1:] for c in SEARCH_JSON_CASES], ids=[c[0] for c in SEARCH_JSON_CASES]
)
def test_search_json_bad_input(demo_client: Any, body: dict[str, Any], status: Any, code: Any) -> None:
    r = demo_client.post("/search", json=body)
    if isinstance(status, tuple):
        assert r.status_code in status, r.text
        status = r.status_code
    assert_error(r, status, code)


RAW_CASES = [
    ("invalid-json", b'{"text": "a red circle",', "application/json", 400, "invalid_json"),
    ("empty-body", b"", "application/json", 400, "invalid_json"),
    ("nan", b'{"embedding": [NaN]}', "application/json", 400, "invalid_json"),
    ("infinity", b'{"text": "a", "min_score": -Infinity}', "application/json", 400, "invalid_json"),
    ("not-utf8", b'{"text": "\xff\xfe"}', "application/json", 400, "invalid_json"),
    ("deep-nesting", b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "invalid_json"),
    ("array-body", b'["a red circle"]', "application/json", 400, "invalid_request"),
    ("string-body", b'"a red circle"', "application/json", 400, "invalid_request"),
    ("null-body", b"null", "application/json", 400, "invalid_request"),
    ("text-plain", b"a red circle", "text/plain", 415, "unsupported_media_type"),
    ("no-content-type", b'{"text": "a"}', None, 415, "unsupported_media_type"),
    ("xml", b"<q>a</q>", "application/xml", 415, "unsupported_media_type"),
    ("raw-not-image", b"GIF89a-not-really", "image/gif", 400, "invalid_image"),
    ("raw-empty-image", b"", "image/png", 400, "invalid_image"),
    ("bad-multipart", b"--x\r\nnot a part\r\n", "multipart/form-data; boundary=x", 400, "invalid_request"),
    ("multipart-no-boundary", b"abc", "multipart/form-data", 400, "invalid_request"),
]


@pytest.mark.parametrize(
    ("body", "ctype", "status", "code"), [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES]
)
def test_search_raw_bad_input(
    demo_client: Any, body: bytes, ctype: str | None, status: int, code: Any
) -> None:
    headers = {"content-type": ctype} if ctype else {}
    assert_error(demo_client.post("/search", content=body, headers=headers), status, code)


def test_search_multipart_bad_input(demo_client: Any) -> None:
    post = demo_client.post
    assert_error(
        post("/search", files={"image": ("a.png", PNG, "image/png")}, data={"text": "a"}),
        400,
        "invalid_request",
    )
    assert_error(
        post("/search", data={"k": "5"}, files={"unused": ("x", b"", "text/plain")}), 400, "invalid_request"
    )
    assert_error(post("/search", files={"k": (None, "5")}), 400, "invalid_request")  # neither text nor image
    assert_error(
        post("/search", files={"image": ("a.txt", b"plain text", "text/plain")}), 400, "invalid_image"
    )
    assert_error(post("/search", files={"image": ("a.png", PNG[:100], "image/png")}), 400, "invalid_image")
    assert_error(
        post("/search", files={"image": ("a.png", PNG, "image/png")}, data={"k": "many"}),
        400,
        "invalid_request",
    )
    assert_error(
        post("/search", files={"image": ("a.png", PNG, "image/png")}, data={"k": "0"}), 400, "invalid_request"
    )
    assert_error(
        post("/search", files={"image": ("a.png", PNG, "image/png")}, data={"min_score": "nan"}),
        400,
        "invalid_request",
    )
    assert_error(post("/search", files={"text": (None, "   ")}), 400, "invalid_text")
    assert_error(
        post("/search", files={"text": ("t.txt", b"a red circle", "text/plain")}), 400, "invalid_request"
    )
    assert_error(post("/search", files={"id": (None, "nope")}), 404, "unknown_id")
    assert_error(
        post("/search", files=[("text", (None, "a")), ("text", (None, "b"))]), 400, "invalid_request"
    )
    assert_error(post("/search", files={"image": (None, "!!notbase64!!")}), 400, "invalid_base64")
    assert_error(post("/search", data={"text": "a", "extra": "x"}), 400, "invalid_request")  # urlencoded form
    assert post("/search", data={"text": "a red circle", "k": "2"}).status_code == 200


def test_search_raw_image_query_params(demo_client: Any) -> None:
    headers = {"content-type": "image/png"}
    assert_error(demo_client.post("/search?k=0", content=PNG, headers=headers), 400, "invalid_request")
    assert_error(demo_client.post("/search?k=x", content=PNG, headers=headers), 400, "invalid_request")


def test_size_limits(demo_bundle: Path, demo_index: tuple[Path, Path]) -> None:
    client = make_client(
        make_settings(demo_bundle, demo_index[0], MAX_IMAGE_BYTES=2000, MAX_IMAGE_PIXELS=10_000)
    )
    big = render_png("red", "circle", size=300)  # > 2000 bytes, 90000 pixels
    assert len(big) > 2000
    assert_error(client.post("/search", json={"image": _b64(big)}), 413, "image_too_large")
    assert_error(
        client.post("/search", json={"image": "data:image/png;base64," + _b64(big)}), 413, "image_too_large"
    )
    assert_error(
        client.post("/search", files={"image": ("a.png", big, "image/png")}),
        413,
        ("image_too_large", "payload_too_large"),
    )
    assert_error(
        client.post("/search", content=big, headers={"content-type": "image/png"}),
        413,
        ("image_too_large", "payload_too_large"),
    )
    assert_error(client.post("/embeddings", json={"image": [_b64(big)]}), 413, "image_too_large")
    small_bytes_many_pixels = _jpeg((200, 200))  # compresses to < 2000 bytes but 40000 pixels
    assert len(small_bytes_many_pixels) < 2000
    assert_error(
        client.post("/search", json={"image": _b64(small_bytes_many_pixels)}), 413, "image_too_large"
    )
    # the body limit: a request far over it is refused before it is parsed
    huge = b'{"text": "' + b"a" * 3_000_000 + b'"}'
    assert_error(
        client.post("/search", content=huge, headers={"content-type": "application/json"}),
        413,
        "payload_too_large",
    )
    assert_error(
        client.post(
            "/search",
            content=b"{}",
            headers={"content-type": "application/json", "content-length": "999999999"},
        ),
        413,
        "payload_too_large",
    )
    ok = _jpeg((32, 32))
    assert len(ok) < 2000
    assert client.post("/search", json={"image": _b64(ok)}).status_code == 200


EMBEDDINGS_CASES = [
    ("neither", {}, 400, "invalid_request"),
    ("nulls", {"text": None, "image": None}, 400, "invalid_request"),
    ("unknown-field", {"text": "a", "k": 3}, 400, "invalid_request"),
    ("empty-text", {"text": ""}, 400, "invalid_text"),
    ("empty-text-in-list", {"text": ["a", " "]}, 400, "invalid_text"),
    ("empty-list", {"text": []}, 400, "invalid_request"),
    ("too-many-texts", {"text": ["a"] * 65}, 400, "invalid_request"),
    ("too-many-images", {"image": [B64] * 17}, 400, "invalid_request"),
    ("text-number", {"text": 3}, 400, "invalid_request"),
    ("text-nested", {"text": [["a"]]}, 400, "invalid_request"),
    ("image-bad-base64", {"image": "%%%"}, 400, "invalid_base64"),
    ("image-not-image", {"image": [B64, _b64(b"nope")]}, 400, "invalid_image"),
    ("image-object", {"image": {"b64": B64}}, 400, "invalid_request"),
    ("image-bomb", {"image": _b64(_png_header_only(50_000, 50_000))}, 413, "image_too_large"),
]


@pytest.mark.parametrize(
    ("body", "status", "code"), [c[1:] for c in EMBEDDINGS_CASES], ids=[c[0] for c in EMBEDDINGS_CASES]
)
def test_embeddings_bad_input(demo_client: Any, body: Any, status: int, code: str) -> None:
    assert_error(demo_client.post("/embeddings", json=body), status, code)


def test_embeddings_bad_requests(demo_client: Any) -> None:
    post = demo_client.post
    assert_error(
        post("/embeddings", content=b"{", headers={"content-type": "application/json"}), 400, "invalid_json"
    )
    assert_error(
        post("/embeddings", content=b"[]", headers={"content-type": "application/json"}),
        400,
        "invalid_request",
    )
    assert_error(post("/embeddings", files={"text": (None, "a")}), 415, "unsupported_media_type")
    assert_error(
        post("/embeddings", content=b"a", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )


def test_routes_and_methods(demo_client: Any) -> None:
    assert_error(demo_client.get("/nope"), 404, "not_found")
    assert_error(demo_client.post("/items/x"), 404, "not_found")
    assert_error(demo_client.get("/search"), 405, "method_not_allowed")
    assert_error(demo_client.put("/embeddings", json={}), 405, "method_not_allowed")
    assert_error(demo_client.delete("/health"), 405, "method_not_allowed")
    assert_error(demo_client.get("/static/nope.js"), 404, "not_found")
    assert_error(demo_client.get("/static/../app.py"), 404, "not_found")
    assert_error(demo_client.get("/items/no-such-id/image"), 404, "unknown_id")


def test_framework_validation_errors_use_the_error_shape(demo_state: Any) -> None:
    from fastapi.testclient import TestClient

    from handler.app import create_app

    app = create_app(demo_state)

    @app.get("/_typed")
    def typed(n: int) -> dict[str, int]:
        return {"n": n}

    client = TestClient(app)
    assert_error(client.get("/_typed?n=abc"), 400, "invalid_request")
    assert_error(client.get("/_typed"), 400, "invalid_request")
    assert client.get("/_typed?n=3").json() == {"n": 3}


def test_unavailable_model_or_index(tmp_path: Path, demo_bundle: Path) -> None:
    broken = make_client(make_settings(tmp_path / "no-bundle", tmp_path / "no-index"))
    r = broken.get("/health")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable" and body["error"]["code"]
    assert {p["component"] for p in body["problems"]} == {"model", "index"}
    assert_error(broken.post("/search", json={"text": "a"}), 503, "model_unavailable")
    assert_error(broken.post("/embeddings", json={"text": "a"}), 503, "model_unavailable")
    # bad input is still a 4xx when the service is down
    assert_error(broken.post("/search", json={}), 400, "invalid_request")
    no_index = make_client(make_settings(demo_bundle, tmp_path / "no-index"))
    r = no_index.get("/health")
    assert r.status_code == 503 and r.json()["problems"][0]["component"] == "index"
    assert "CURRENT" in r.json()["reason"]
    assert_error(no_index.post("/search", json={"text": "a"}), 503, "index_unavailable")
    assert_error(no_index.get("/items/x/image"), 503, "index_unavailable")
    assert no_index.post("/embeddings", json={"text": "a"}).status_code == 200


def test_lone_surrogates_are_replaced_not_fatal(demo_client: Any) -> None:
    headers = {"content-type": "application/json"}
    r = demo_client.post("/search", content=b'{"text": "a red \\ud83d circle"}', headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["query"]["text"] == "a red \ufffd circle"
    assert_error(
        demo_client.post("/search", content=b'{"id": "\\udc00"}', headers=headers), 404, "unknown_id"
    )
    r = demo_client.post("/embeddings", content=b'{"text": ["\\ud800"]}', headers=headers)
    assert r.status_code == 200 and len(r.json()["text_embeddings"]) == 1
