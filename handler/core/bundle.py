"""The model bundle: manifest schema, checksums and the model fingerprint (see docs/formats.md).

Shared by the exporter (which writes bundles) and every reader (runtime, index builder), so the format
has exactly one definition.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from handler.core.errors import ArtifactError, ConfigError
from handler.core.hashing import sha256_file
from handler.core.uri import parse_uri

SCHEMA_VERSION = 1
KIND = "clip-onnx-bundle"
MANIFEST = "manifest.json"
PRECISIONS = ("fp32", "fp16", "int8")
TOWERS = ("textual", "visual")
IO = {
    "textual": {
        "input": {"name": "input_ids", "dtype": "int64"},
        "output": {"name": "text_embeds", "dtype": "float32"},
    },
    "visual": {
        "input": {"name": "pixel_values", "dtype": "float32"},
        "output": {"name": "image_embeds", "dtype": "float32"},
    },
}


RANDOM_INIT_WARNING = (
    "the model bundle has random weights (exported with --pretrained none): embeddings and search "
    "results are meaningless; export with a pretrained tag or a checkpoint file"
)


def is_random_init(model: dict[str, Any]) -> bool:
    """A bundle's ``model`` section describes random weights: recorded by the exporter, or (bundles written
    before ``random_init`` existed) neither a pretrained tag nor a checkpoint."""
    if "random_init" in model:
        return bool(model["random_init"])
    return not model.get("pretrained") and not model.get("checkpoint")


def onnx_filename(tower: str, precision: str) -> str:
    """`textual.onnx` for fp32, `textual.int8.onnx` for the others."""
    return f"{tower}.onnx" if precision == "fp32" else f"{tower}.{precision}.onnx"


def fingerprint(file_hashes: dict[str, str]) -> str:
    """Hash over (name, sha256) pairs of the ONNX files: identifies the exact model an index was built
    with."""
    h = hashlib.sha256()
    for name in sorted(file_hashes):
        h.update(f"{name}:{file_hashes[name]}\n".encode())
    return "sha256:" + h.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


@dataclass(frozen=True)
class Bundle:
    """A verified bundle directory and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def model_fingerprint(self) -> str:
        return cast(str, self.manifest["model_fingerprint"])

    @property
    def embed_dim(self) -> int:
        return int(self.manifest["embed_dim"])

    @property
    def model_name(self) -> str:
        return cast(str, self.manifest["model"]["name"])

    @property
    def precisions(self) -> list[str]:
        return list(self.manifest["precisions"])

    def onnx_path(self, tower: str, precision: str = "fp32") -> Path:
        entry = self.manifest["precisions"].get(precision)
        if entry is None:
            raise ConfigError(
                f"precision {precision!r} is not in bundle {self.path} (it has "
                f"{', '.join(self.precisions)}); "
                f"re-export with --precision {precision} or choose one of those"
            )
        return self.path / cast(str, entry[tower])

    def tower_files(self, tower: str, precision: str = "fp32") -> list[str]:
        """The tower's ONNX file and, for graphs over 2 GB, its external-data file."""
        data = self.manifest["precisions"][precision].get("external_data", {}).get(tower)
        return [self.onnx_path(tower, precision).name, *([data] if data else [])]

    def verify_file(self, name: str) -> None:
        """Check one file's size and sha256 against the manifest."""
        entry = self.manifest["files"].get(name)
        if entry is None:
            raise ArtifactError(f"bundle {self.path}: {name} is not listed in {MANIFEST}")
        path = self.path / name
        if not path.is_file():
            raise ArtifactError(f"bundle {self.path}: {name} is missing; re-export the bundle")
        size = path.stat().st_size
        if size != entry["size"]:
            raise ArtifactError(
                f"bundle {self.path}: {name} has {size} bytes, manifest says {entry['size']}; "
                "the file is truncated or replaced; re-export or re-download the bundle"
            )
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise ArtifactError(
                f"bundle {self.path}: sha256 of {name} is {digest}, manifest says {entry['sha256']}; "
                "the file is corrupt or replaced; re-export or re-download the bundle"
            )

    def verify(self, names: list[str] | None = None) -> None:
        for name in names if names is not None else sorted(self.manifest["files"]):
            self.verify_file(name)


def read_manifest(bundle_dir: str | Path) -> Bundle:
    """Read and validate a bundle's manifest (structure and schema version; file checksums via verify())."""
    path = Path(bundle_dir)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(
            f"{path} is not a model bundle: {MANIFEST} not found; create one with `python -m export --out "
            f"{path}`"
        )
    try:
        raw = manifest_path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    return Bundle(path=path, manifest=parse_manifest(raw, str(manifest_path)))


def load_manifest(uri: str | Path) -> dict[str, Any]:
    """The manifest of a bundle at a local path, ``file://`` or ``s3://`` URI, validated like
    :func:`read_manifest`, without fetching or loading any model file."""
    from handler.core.storage import NotFoundError, open_store

    loc = parse_uri(uri)
    if not loc.is_s3:
        return read_manifest(loc.local_path()).manifest
    store = open_store(str(loc))
    try:
        raw = store.read_bytes(MANIFEST)
    except NotFoundError:
        raise ArtifactError(
            f"{loc} is not a model bundle: {MANIFEST} not found; "
            f"create one with `python -m export` and upload it"
        ) from None
    return parse_manifest(raw, store.uri_for(MANIFEST))


def parse_manifest(raw: bytes, where: str) -> dict[str, Any]:
    """The one validator of a bundle manifest's bytes (structure and schema version); ``where`` names it."""
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{where}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise ArtifactError(f"{where}: not a {KIND} manifest")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{where}: schema_version {manifest.get('schema_version')!r} is not supported "
            f"(this runtime reads {SCHEMA_VERSION}); re-export the bundle with this version of the project"
        )
    for key in ("model_fingerprint", "embed_dim", "text", "image", "precisions", "files"):
        if key not in manifest:
            raise ArtifactError(f"{where}: required field {key!r} is missing")
    return manifest
