"""Fixtures of the deployment tests: a small collection, an index of it built with the tiny bundle, and
API Gateway HTTP API (payload 2.0) events shaped like
``sam local generate-event apigateway http-api-proxy``."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from events.builders import http_api
from events.builders import multipart as build_multipart

ROOT = Path(__file__).resolve().parents[2]
INDEX_VERSION = "20260101T000000000000Z-deploy"


@pytest.fixture(scope="session")
def deploy_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 captioned shape images (JPEG + JSON sidecars) in a few sub-folders."""
    from demo.shapes import write_collection

    out = tmp_path_factory.mktemp("deploy-collection")
    write_collection(out, 12, seed=7, size=64)
    return out


def build_index(bundle: Path, collection: Path, dest: Path, version: str = INDEX_VERSION) -> dict[str, Any]:
    """Embed every image of ``collection`` with ``bundle`` and publish one index version at ``dest``."""
    from handler.core.runtime import load_bundle
    from index_builder.publish import publish
    from index_builder.version_write import write_version

    emb = load_bundle(bundle)
    paths = sorted(collection.rglob("*.jpg"))
    vectors = emb.embed_images([p.read_bytes() for p in paths])
    items = [
        {
            "id": p.relative_to(collection).with_suffix("").as_posix(),
            "uri": p.relative_to(collection).as_posix(),
            "metadata": json.loads(p.with_suffix(".json").read_text()),
        }
        for p in paths
    ]
    manifest = write_version(
        dest,
        version,
        vectors=vectors,
        items=items,
        threads=1,
        manifest_fields={
            "model_fingerprint": emb.model_fingerprint,
            "precision": "fp32",
            "source": str(collection),
        },
    )
    publish(dest, version, manifest)
    return manifest


@pytest.fixture(scope="session")
def deploy_index(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path, deploy_collection: Path
) -> Path:
    """An index (one published version, INDEX_VERSION) of ``deploy_collection`` embedded by
    ``tiny_bundle``."""
    dest = tmp_path_factory.mktemp("deploy-index") / "index"
    build_index(tiny_bundle, deploy_collection, dest)
    return dest


def http_event(
    method: str,
    path: str,
    body: bytes | str | None = None,
    *,
    content_type: str | None = None,
    headers: dict[str, str] | None = None,
    query: str = "",
) -> dict[str, Any]:
    """An HTTP API payload-2.0 event (events.builders). Binary bodies (bytes) are base64-encoded."""
    return http_api(method, path, body, content_type, query, headers=headers)


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = "----deploytest" + uuid.uuid4().hex
    body = build_multipart(
        fields, {k: (name, ctype, data) for k, (name, data, ctype) in files.items()}, boundary
    )
    return body, f"multipart/form-data; boundary={boundary}"


def search_events(image: bytes) -> dict[str, dict[str, Any]]:
    """name -> event: text search, image search (base64 JSON), image upload (multipart), health, info."""
    body, ctype = multipart({"k": "3"}, {"image": ("query.jpg", image, "image/jpeg")})
    return {
        "search-text": http_event(
            "POST", "/search", json.dumps({"text": "a red circle", "k": 3}), content_type="application/json"
        ),
        "search-image": http_event(
            "POST",
            "/search",
            json.dumps({"image": base64.b64encode(image).decode(), "k": 3}),
            content_type="application/json",
        ),
        "search-image-multipart": http_event("POST", "/search", body, content_type=ctype),
        "health": http_event("GET", "/health"),
        "info": http_event("GET", "/info"),
    }


def write_events(directory: Path, image: bytes) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, event in search_events(image).items():
        out[name] = directory / f"{name}.json"
        out[name].write_text(json.dumps(event), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def query_image(deploy_collection: Path) -> bytes:
    return sorted(deploy_collection.rglob("*.jpg"))[0].read_bytes()


@pytest.fixture(scope="session")
def event_files(tmp_path_factory: pytest.TempPathFactory, query_image: bytes) -> dict[str, Path]:
    return write_events(tmp_path_factory.mktemp("events"), query_image)
