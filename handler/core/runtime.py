"""The one public entry point for embedding: `load_bundle(path_or_uri)` -> Embedder.

Shared by the service, the index builder and the tests, so indexing and querying embed identically.
Torch-free: onnxruntime + numpy + PIL.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from handler.core.bundle import MANIFEST, Bundle, is_random_init, parse_manifest, read_manifest
from handler.core.encoders import Encoder, create_session, default_threads
from handler.core.errors import ArtifactError, ConfigError, InvalidTextError
from handler.core.images import DEFAULT_MAX_PIXELS, ImageOptions
from handler.core.preprocess import ImagePreprocessor
from handler.core.tokenizer_factory import load_tokenizer, tokenize_with_info, tokenizer_files
from handler.core.uri import parse_uri

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

__all__ = ["Embedder", "fetch_bundle", "load_bundle"]
DEFAULT_BATCH_SIZE = 32
_LIVE: weakref.WeakSet[Embedder] = weakref.WeakSet()


def _lower_thread_priority(step: int = 10) -> None:
    """Raise this thread's nice value (Linux: per thread; onnxruntime's pool threads created from it
    inherit it). Background work then yields the cores to the request path on small machines."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + step))
    except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
        pass


@atexit.register
def _close_all() -> None:
    """Release every session before interpreter teardown: an onnxruntime session destroyed during
    finalization, after onnxruntime's environment, aborts the process ("terminate called without an
    active exception"). atexit runs after non-daemon threads (the background visual load) are joined."""
    for embedder in list(_LIVE):
        embedder.close()


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
        background_visual: bool = False,
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
        self.preprocessor = ImagePreprocessor(bundle.manifest["image"], max_pixels=max_pixels)
        self._preprocessors: dict[ImageOptions, ImagePreprocessor] = {
            self.preprocessor.options: self.preprocessor
        }
        # A variable-length text graph (docs/formats.md): each batch runs only up to its longest text's EOT.
        self.variable_length = bool(text_section.get("variable_length"))
        self._pad_id = int(text_section["tokenizer"].get("pad_token_id") or 0)
        self._text = self._load("textual")
        self.timings["text_load_s"] = time.perf_counter() - t0
        self._visual: Encoder | None = None
        self._visual_lock = threading.Lock()
        self.visual_ready = threading.Event()  # set once the visual session exists (loaded or preloaded)
        self.visual_error: BaseException | None = None  # why a background load failed (retried on use)
        if not lazy_visual:
            self._visual_encoder()
        elif background_visual:
            # not a daemon: a process that exits while onnxruntime builds the session would abort
            # ("terminate called without an active exception"); exit waits for it instead
            threading.Thread(target=self._preload_visual, name="visual-session").start()
        _LIVE.add(self)

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
            "random_init": is_random_init(self.bundle.manifest["model"]),
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
        trim = self._pad_id if tower == "textual" and self.variable_length else None
        return Encoder(
            create_session(path, self.precision, self.threads), tower, self.batch_size, trim_pad_id=trim
        )

    def _visual_encoder(self) -> Encoder:
        """The visual session, created once (thread-safe): a caller arriving while the background load runs
        waits for it instead of loading a second copy."""
        if self._visual is None:
            with self._visual_lock:
                if self._visual is None:
                    t0 = time.perf_counter()
                    if self.verify:
                        self.bundle.verify(self.bundle.tower_files("visual", self.precision))
                    self._visual = self._load("visual")
                    self.timings["visual_load_s"] = time.perf_counter() - t0
                    self.visual_ready.set()
        return self._visual

    def close(self) -> None:
        """Release both sessions (waits for a background visual load in progress). Idempotent; embedding
        afterwards raises RuntimeError."""
        with self._visual_lock:
            if self._visual is not None:
                self._visual.close()
        self._text.close()

    def _preload_visual(self) -> None:
        _lower_thread_priority()  # the text path (imports, first text query) gets the cores first
        try:
            self._visual_encoder()
        except Exception as e:  # reported by the first image query, which tries again
            self.visual_error = e
            log.warning("background load of the visual tower failed: %s: %s", type(e).__name__, e)

    # -- text -----------------------------------------------------------------------------------------------
    @property
    def languages(self) -> list[str]:
        """Language codes the tokenizer accepts (NLLB bundles); empty when it has no language option."""
        return list(getattr(self.tokenizer, "languages", []))

    def tokenize(self, texts: str | Sequence[str], language: str | None = None) -> np.ndarray:
        return tokenize_with_info(self.tokenizer, [texts] if isinstance(texts, str) else texts, language)[0]

    def tokenize_with_info(
        self, texts: Sequence[str], language: str | None = None
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
    def preprocessor_for(self, options: ImageOptions | None = None) -> ImagePreprocessor:
        """The preprocessor for ``options`` (an index's recorded :class:`ImageOptions`; None: the
        defaults)."""
        if options is None:
            return self.preprocessor
        pre = self._preprocessors.get(options)
        if pre is None:
            pre = self._preprocessors.setdefault(options, self.preprocessor.with_options(options))
        return pre

    def decode(self, image: Any, options: ImageOptions | None = None) -> Image.Image:
        """Decode with the pixel limit (and, for large JPEGs, at the scale the model needs)."""
        return self.preprocessor_for(options).load(image)

    def preprocess(self, image: Any, options: ImageOptions | None = None) -> np.ndarray:
        """bytes | path | PIL image -> float32 [3, H, W] (decoding, EXIF orientation, resize, crop,
        normalise)."""
        return self.preprocessor_for(options)(image)

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


def fetch_bundle(uri: str, cache_dir: str | os.PathLike[str] | None, precision: str) -> Path:
    """Copy the files of one precision of a remote bundle into a local cache (checksums verified)."""
    import hashlib

    from handler.core.storage import fetch_dir, open_store

    store = open_store(uri)
    local = Path(cache_dir or default_cache_dir()) / "bundles" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    local.mkdir(parents=True, exist_ok=True)
    raw = store.read_bytes(MANIFEST)
    bundle = Bundle(path=local, manifest=parse_manifest(raw, store.uri_for(MANIFEST)))
    (local / MANIFEST).write_bytes(raw)
    names = [n for t in ("textual", "visual") for n in bundle.tower_files(t, precision)]
    names.extend(tokenizer_files(bundle.manifest["text"]))
    missing = [n for n in names if n not in bundle.manifest["files"]]
    if missing:
        raise ArtifactError(
            f"bundle {uri}: {', '.join(missing)} not listed in {MANIFEST}; re-export the bundle"
        )
    fetch_dir(store, local, names, expected={n: bundle.manifest["files"][n] for n in names})
    return local


def load_bundle(
    path_or_uri: str | os.PathLike[str],
    *,
    precision: str = "fp32",
    threads: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    verify: bool = True,
    lazy_visual: bool = True,
    background_visual: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Embedder:
    """Load a model bundle (local directory or s3:// prefix, cached locally) and return its Embedder.

    Checksums of the files in use are verified (visual lazily, on the first image) unless ``verify`` is
    False for a local bundle (one checked when its immutable image was built); files fetched from S3 are
    always checked. The text session loads first so a text query's cold start does not pay for the vision
    tower; ``background_visual`` then creates the visual session in a thread right away, so the first image
    query does not pay for it either (unless it arrives before that finishes, and then only the rest).
    """
    if threads is not None and threads < 1:
        raise ConfigError(f"threads={threads}: must be >= 1")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: must be >= 1")
    loc = parse_uri(path_or_uri)
    if loc.is_s3:
        # fetch_bundle verified every file it cached against the manifest: no second hashing pass.
        path, verify = fetch_bundle(str(loc), cache_dir, precision), False
    else:
        path = loc.local_path()
    bundle = read_manifest(path)
    return Embedder(
        bundle,
        precision=precision,
        threads=threads,
        batch_size=batch_size,
        max_pixels=max_pixels,
        verify=verify,
        lazy_visual=lazy_visual,
        background_visual=background_visual,
    )
