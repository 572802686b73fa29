"""Fixtures of the service tests: a demo index (demo bundle embeddings of rendered shapes), apps, clients.

Until ``python -m index_builder build`` lands, the index is written with ``index_builder.publish`` on
``load_bundle(demo_bundle).embed_images(...)`` over ``demo.shapes.write_collection`` images; items carry
``id`` (relative path), ``uri`` (absolute path), ``metadata`` (the sidecar JSON), ``size``, ``sha256``,
``width``, ``height`` - the builder's item fields.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.handler.browser_support import browser, site  # noqa: F401  (fixtures of test_browser*.py)

DEMO_IMAGES = 256  # 8 per colour x shape class
DEMO_SEED = 11


def collection_items(images_dir: Path, paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Item rows for images written by ``demo.shapes.write_collection`` (sidecar JSON -> metadata)."""
    items = []
    for path in paths:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
        items.append(
            {
                "id": path.relative_to(images_dir).as_posix(),
                "uri": str(path),
                "metadata": json.loads(path.with_suffix(".json").read_text()),
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "width": width,
                "height": height,
            }
        )
    return items


def write_index(
    index_dir: Path | str,
    embedder: Any,
    items: list[dict[str, Any]],
    vectors: np.ndarray,
    version: str,
    source: str | None,
    **manifest: Any,
) -> dict[str, Any]:
    """Write one version with index_builder.publish and move the pointer to it."""
    from index_builder.publish import publish
    from index_builder.version_write import write_version

    fields = {
        "model_fingerprint": embedder.model_fingerprint,
        "precision": embedder.precision,
        "source": source,
        "stats": {"embedded": len(items), "unchanged": 0, "removed": 0},
        **manifest,
    }
    m = write_version(
        str(index_dir), version, vectors=vectors, items=items, manifest_fields=fields, threads=1
    )
    publish(str(index_dir), version, m)
    return m


@pytest.fixture(scope="session")
def demo_embedder(demo_bundle: Path) -> Any:
    from handler.core.runtime import load_bundle

    return load_bundle(demo_bundle, threads=2)


@pytest.fixture(scope="session")
def demo_collection(
    tmp_path_factory: pytest.TempPathFactory, demo_embedder: Any
) -> tuple[Path, list[dict[str, Any]], np.ndarray]:
    """(images_dir, items, vectors) of the demo collection."""
    from demo.shapes import write_collection

    images_dir = tmp_path_factory.mktemp("demo-images")
    paths = write_collection(images_dir, DEMO_IMAGES, DEMO_SEED, size=96)
    vectors = demo_embedder.embed_images(paths)
    return images_dir, collection_items(images_dir, paths), vectors


@pytest.fixture(scope="session")
def demo_index(
    tmp_path_factory: pytest.TempPathFactory, demo_embedder: Any, demo_collection: Any
) -> tuple[Path, Path]:
    """(index_dir, images_dir): the demo collection indexed with the demo bundle (one published version)."""
    images_dir, items, vectors = demo_collection
    index_dir = tmp_path_factory.mktemp("demo-index")
    write_index(index_dir, demo_embedder, items, vectors, "v0001", str(images_dir))
    return index_dir, images_dir


def make_settings(
    model_uri: str | os.PathLike[str], index_uri: str | os.PathLike[str] | None = None, **overrides: Any
) -> Any:
    from handler.config import Settings

    base = {"MODEL_URI": str(model_uri), "ORT_THREADS": "2", "INDEX_REFRESH_SECONDS": "0"}
    if index_uri is not None:
        base["INDEX_URI"] = str(index_uri)
    base.update({k: str(v) for k, v in overrides.items()})
    return Settings.from_env(base)


def make_client(settings: Any) -> Any:
    from fastapi.testclient import TestClient

    from handler.app import create_app
    from handler.state import ServiceState

    return TestClient(create_app(ServiceState(settings).load()))


@pytest.fixture(scope="session")
def demo_state(demo_bundle: Path, demo_index: tuple[Path, Path]) -> Any:
    from handler.state import ServiceState

    return ServiceState(make_settings(demo_bundle, demo_index[0], INDEX_REFRESH_SECONDS=3600)).load()


@pytest.fixture(scope="session")
def demo_client(demo_state: Any) -> Iterator[Any]:
    """A TestClient of the app on the demo bundle and index (no API key, no CORS)."""
    from fastapi.testclient import TestClient

    from handler.app import create_app

    assert demo_state.healthy(), demo_state.problems()
    with TestClient(create_app(demo_state)) as client:
        yield client


def render_png(colour: str, shape: str, seed: int = 5, size: int = 96) -> bytes:
    from demo.shapes import render

    buf = io.BytesIO()
    render(colour, shape, np.random.default_rng(seed), size).save(buf, format="PNG")
    return buf.getvalue()
