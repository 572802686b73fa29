"""The build's options and result, its worker default, and its progress messages (the ``index_builder``
logger)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handler.core.cpus import usable_cpus
from handler.core.duplicates import DEFAULT_DUPLICATE_THRESHOLD, duplicate_settings
from handler.core.images import (
    DEFAULT_MAX_PIXELS,
    WHITE,
    parse_background,
)
from index_builder.errors import UsageError
from index_builder.recall import DEFAULT_TARGET_RECALL
from index_builder.shard_plan import DEFAULT_SHARD_SIZE

log = logging.getLogger("index_builder")

__all__ = ["BACKENDS", "DEFAULT_MAX_FILE_BYTES", "BuildOptions", "BuildResult", "default_workers"]

BACKENDS = ("onnx", "torch")
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024  # a file over this is not read (a 3 GB file would be, whole)


def default_workers() -> int:
    return max(2, min(8, usable_cpus()))


@dataclass
class BuildOptions:
    source: str
    bundle: str
    out: str
    full: bool = False
    batch_size: int = 32
    workers: int = field(default_factory=default_workers)
    precision: str = "fp32"
    backend: str = "onnx"
    device: str = "cpu"
    pretrained: str | None = None
    M: int = 16
    ef_construction: int = 200
    ef: int | None = None  # None: each shard's smallest ef reaching target_recall, measured at build
    target_recall: float = DEFAULT_TARGET_RECALL
    index_shard_size: int = DEFAULT_SHARD_SIZE
    keep_versions: int = 3
    strict: bool = False
    work_dir: str | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES
    quiet: bool = False
    shard_size: int = 1024
    threads: int | None = None
    allow_empty: bool = False
    #: transparent images are composited over this colour (None: alpha dropped, as before it existed)
    background: tuple[int, int, int] | None = WHITE
    #: near-duplicate groups of the version at this cosine similarity (None: not computed)
    duplicate_threshold: float | None = DEFAULT_DUPLICATE_THRESHOLD

    def validate(self) -> None:
        for name, low in (
            ("batch_size", 1),
            ("workers", 1),
            ("M", 2),
            ("ef_construction", 1),
            ("ef", 1),
            ("keep_versions", 1),
            ("shard_size", 1),
            ("index_shard_size", 1),
        ):
            value = getattr(self, name)
            if name == "ef" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                flag = "--" + name.replace("_", "-") if name != "M" else "--M"
                raise UsageError(f"{flag} {value!r}: must be an integer >= {low}")
        if self.max_pixels is not None and (not isinstance(self.max_pixels, int) or self.max_pixels < 1):
            raise UsageError(f"--max-pixels {self.max_pixels!r}: must be a positive integer")
        if self.max_file_bytes is not None and (
            isinstance(self.max_file_bytes, bool)
            or not isinstance(self.max_file_bytes, int)
            or self.max_file_bytes < 1
        ):
            raise UsageError(f"--max-file-bytes {self.max_file_bytes!r}: must be a positive integer")
        try:
            self.background = parse_background(self.background)
        except ValueError as e:
            raise UsageError(f"--background: {e}") from None
        try:
            duplicate_settings(self.duplicate_threshold)
        except ValueError as e:
            raise UsageError(f"--duplicate-threshold: {e}") from None
        if (
            isinstance(self.target_recall, bool)
            or not isinstance(self.target_recall, (int, float))
            or not (0.0 < self.target_recall <= 1.0)
        ):
            raise UsageError(f"--target-recall {self.target_recall!r}: must be a number in (0, 1]")
        self.target_recall = float(self.target_recall)
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise UsageError(f"--threads {self.threads!r}: must be a positive integer")
        if self.backend not in BACKENDS:
            raise UsageError(f"--backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        if self.backend == "onnx" and self.device != "cpu":
            raise UsageError(
                f"--device {self.device}: the onnx backend runs on cpu; use --backend torch for cuda"
            )
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise UsageError(f"--device {self.device!r}: use cpu or cuda")
        if self.backend == "onnx" and self.pretrained:
            raise UsageError(
                "--pretrained is only used by --backend torch (the onnx backend reads the bundle)"
            )


@dataclass
class BuildResult:
    version: str
    manifest: dict[str, Any]
    stats: dict[str, Any]
    errors: list[dict[str, Any]]
    seconds: float
    embed_seconds: float
    work_dir: Path
    pruned: list[str]
    previous_version: str | None
    published: bool = True  # False: nothing changed, ``version`` is the current version, left in place
    warnings: list[dict[str, Any]] = field(default_factory=list)  # {"id", "uri", "message"} per warning
    skipped: dict[str, int] = field(default_factory=dict)  # files the source listing passed over, by kind

    @property
    def images_per_s(self) -> float:
        """Rate of the images that went through decode + encode in this run."""
        n = self.stats.get("embedded", 0)
        return n / self.embed_seconds if self.embed_seconds > 0 else 0.0


class _Log:
    """The build's progress on the ``index_builder`` logger: info silenced by --quiet, warnings always."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def info(self, msg: str) -> None:
        if not self.quiet:
            log.info(msg)

    def warn(self, msg: str) -> None:
        log.warning(msg)

    item_warnings_shown = 20

    def item_warning(self, n: int, item_id: Any, msg: str) -> None:
        """The ``n``-th warning about a file (named); the first 20 are logged; silenced by --quiet."""
        if not self.quiet and n <= self.item_warnings_shown:
            log.warning(f"{item_id}: {msg}")


def format_skipped(skipped: dict[str, int]) -> str:
    """``3 .svg, 1 hidden`` - what the listing passed over."""
    return ", ".join(f"{n} {kind}" for kind, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))


def _exts() -> tuple[str, ...]:
    from index_builder.source_base import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, quiet: bool, factory: Callable[..., Any] | None) -> Any:
    if quiet or total == 0:
        return _NoBar()
    if factory is not None:
        return factory(total=total)
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="img",
        desc="embedding",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
        smoothing=0.1,
    )
