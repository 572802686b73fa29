"""The one public entry point for embedding: `load_bundle(path_or_uri)` -> Embedder.

Shared by the service, the index builder and the tests, so indexing and querying embed identically.
Torch-free: onnxruntime + numpy + PIL.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from handler.bundle import MANIFEST, Bundle, read_manifest
from handler.encoders import Encoder, create_session, default_threads
from handler.errors import ArtifactError, ConfigError, InvalidTextError
from handler.preprocess import ImagePreprocessor, decode_image
from handler.tokenizer_factory import load_tokenizer, tokenize_with_info, tokenizer_files

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_BATCH_SIZE = 32


class Embedder:
    """Text and image embeddings from a verified bundle: float32, L2-normalised, shape [n, dim]."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        verify: bool = True,
        lazy_visual: bool = True,
    ):
        self.bundle = bundle
        self.precision = precision
        self.threads = threads or default_threads()
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.verify = verify
        self.timings: dict[str, float] = {}
        # Resolve both paths now: an unknown precision fails at load, not at the first image query.
        self._paths = {tower: bundle.onnx_path(tower, precision) for tower in ("textual", "visual")}
        text_section = bundle.manifest["text"]
        if verify:
            bundle.verify([*bundle.tower_files("textual", precision), *tokenizer_files(text_section)])
        t0 = time.perf_counter()
        self.tokenizer = load_tokenizer(bundle.path, text_section)
        self.preprocessor = ImagePreprocessor(bundle.manifest["image"])
        self._text = self._load("textual")
        self.timings["text_load_s"] = time.perf_counter() - t0
        self._visual: Encoder | None = None
        self._visual_lock = threading.Lock()
        if not lazy_visual:
            self._visual_encoder()

    # -- metadata -------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.bundle.embed_dim

    @property
    def model_name(self) -> str:
        return self.bundle.model_name

    @property
    def model_fingerprint(self) -> str:
        return self.bundle.model_fingerprint

    @property
    def context_length(self) -> int:
        return int(self.bundle.manifest["text"]["context_length"])

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.bundle.manifest["image"]["size"]
        return int(h), int(w)

    @property
    def visual_loaded(self) -> bool:
        return self._visual is not None

    def info(self) -> dict[str, Any]:
        return {
            "name": self.model_name,
            "pretrained": self.bundle.manifest["model"].get("pretrained"),
            "checkpoint": self.bundle.manifest["model"].get("checkpoint"),
            "model_fingerprint": self.model_fingerprint,
            "precision": self.precision,
            "dim": self.dim,
            "context_length": self.context_length,
            "image_size": list(self.image_size),
            "threads": self.threads,
        }

    # -- sessions -------------------------------------------------------------------------------------------
    def _load(self, tower: str) -> Encoder:
        path = self._paths[tower]
        return Encoder(create_session(path, self.precision, self.threads), tower, self.batch_size)

    def _visual_encoder(self) -> Encoder:
        if self._visual is None:
            with self._visual_lock:
                if self._visual is None:
                    t0 = time.perf_counter()
                    if self.verify:
                        self.bundle.verify(self.bundle.tower_files("visual", self.precision))
                    self._visual = self._load("visual")
                    self.timings["visual_load_s"] = time.perf_counter() - t0
        return self._visual

    # -- text -----------------------------------------------------------------------------------------------
    @property
    def languages(self) -> list[str]:
        """Language codes the tokenizer accepts (NLLB bundles); empty when it has no language option."""
        return list(getattr(self.tokenizer, "languages", []))

    def tokenize(self, texts: str | Sequence[str], language: str | None = None) -> np.ndarray:
        return tokenize_with_info(self.tokenizer, [texts] if isinstance(texts, str) else texts, language)[0]

    def tokenize_with_info(self, texts: Sequence[str], language: str | None = None
                           ) -> tuple[np.ndarray, list[bool]]:
        return tokenize_with_info(self.tokenizer, list(texts), language)

    def embed_tokens(self, ids: np.ndarray) -> np.ndarray:
        return self._text(np.asarray(ids, dtype=np.int64))

    def embed_texts(self, texts: str | Sequence[str], language: str | None = None) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        if not all(isinstance(t, str) for t in texts):
            raise InvalidTextError("every text must be a string")
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_tokens(self.tokenize(list(texts), language))

    # -- images ---------------------------------------------------------------------------------------------
    def decode(self, image: Any):
        return decode_image(image, self.max_pixels)

    def preprocess(self, image: Any) -> np.ndarray:
        """bytes | path | PIL image -> float32 [3, H, W] (decoding, EXIF orientation, resize, crop, normalise)."""
        return self.preprocessor(self.decode(image))

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixels, dtype=np.float32)
        if pixels.ndim == 3:
            pixels = pixels[None]
        if len(pixels) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self._visual_encoder()(np.ascontiguousarray(pixels))

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        if not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_pixels(np.stack([self.preprocess(img) for img in images]))


def default_cache_dir() -> Path:
    return Path(os.environ.get("CACHE_DIR") or "/tmp/clip-search")


def fetch_bundle(uri: str, cache_dir: str | os.PathLike | None, precision: str) -> Path:
    """Copy the files of one precision of a remote bundle into a local cache (checksums verified)."""
    import hashlib

    from handler.storage import fetch_dir, open_store

    store = open_store(uri)
    local = Path(cache_dir or default_cache_dir()) / "bundles" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    local.mkdir(parents=True, exist_ok=True)
    (local / MANIFEST).write_bytes(store.read_bytes(MANIFEST))
    bundle = read_manifest(local)  # validates kind, schema version and required fields
    names = [n for t in ("textual", "visual") for n in bundle.tower_files(t, precision)]
    names.extend(tokenizer_files(bundle.manifest["text"]))
    missing = [n for n in names if n not in bundle.manifest["files"]]
    if missing:
        raise ArtifactError(f"bundle {uri}: {', '.join(missing)} not listed in {MANIFEST}; re-export the bundle")
    fetch_dir(store, local, names, expected={n: bundle.manifest["files"][n] for n in names})
    return local


def load_bundle(
    path_or_uri: str | os.PathLike,
    *,
    precision: str = "fp32",
    threads: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    verify: bool = True,
    lazy_visual: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> Embedder:
    """Load a model bundle (local directory or s3:// prefix, cached locally) and return its Embedder.

    Checksums of the files in use are verified (visual lazily, on the first image); the text session loads
    first so a text query's cold start does not pay for the vision tower.
    """
    if threads is not None and threads < 1:
        raise ConfigError(f"threads={threads}: must be >= 1")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: must be >= 1")
    uri = str(path_or_uri)
    if uri.startswith("s3://"):
        # fetch_bundle verified every file it cached against the manifest: no second hashing pass.
        path, verify = fetch_bundle(uri, cache_dir, precision), False
    else:
        path = Path(uri[len("file://"):] if uri.startswith("file://") else uri)
    bundle = read_manifest(path)
    return Embedder(bundle, precision=precision, threads=threads, batch_size=batch_size, max_pixels=max_pixels,
                    verify=verify, lazy_visual=lazy_visual)
