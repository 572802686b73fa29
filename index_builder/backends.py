"""Image encoders for the builder: the ONNX bundle (default) or the PyTorch open_clip model (GPU rebuilds).

Both take the same float32 ``[n, 3, H, W]`` pixels from the torch-free :class:`ImagePreprocessor` (so
both backends see identical pixels) and return L2-normalised float32 ``[n, dim]``. ``torch`` and
``open_clip`` are imported only by :class:`TorchBackend`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from handler.core.hashing import sha256_file
from index_builder.errors import BuildError, UsageError

if TYPE_CHECKING:
    from index_builder.options import BuildOptions

__all__ = ["OnnxBackend", "TorchBackend", "load_backend", "read_bundle_manifest"]


def read_bundle_manifest(bundle: str) -> dict[str, Any]:
    """The bundle's manifest.json (local directory or s3:// prefix), without loading any model."""
    from handler.core.bundle import load_manifest
    from handler.core.errors import SearchError

    try:
        return load_manifest(bundle)
    except SearchError as e:
        raise BuildError(f"--bundle {bundle}: {e.message}") from None


class OnnxBackend:
    """The bundle's visual ONNX tower (checksum-verified), run like :meth:`Embedder.embed_pixels`."""

    name = "onnx"

    def __init__(
        self,
        bundle: str,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        batch_size: int = 32,
        cache_dir: str | None = None,
        spinning: bool = False,
    ):
        from handler.core.encoders import Encoder, create_session
        from handler.core.errors import SearchError
        from handler.core.runtime import load_bundle

        try:
            self.embedder = load_bundle(
                bundle,
                precision=precision,
                threads=threads,
                batch_size=batch_size,
                max_pixels=None,
                lazy_visual=not spinning,
                cache_dir=cache_dir,
            )
            if not spinning:
                b = self.embedder.bundle
                path = b.onnx_path("visual", precision)
                if self.embedder.verify:
                    b.verify([path.name])
                # no spin-waiting: the decode workers need those cores
                # (measured: up to ~1.5x end to end on 2 CPUs)
                session = create_session(path, precision, threads, spinning=False)
                self._encoder = Encoder(session, "visual", batch_size)
        except SearchError as e:
            raise BuildError(f"--bundle {bundle}: {e.message}") from None
        self.spinning = spinning
        self.manifest = self.embedder.bundle.manifest
        self.precision = precision
        self.device = "cpu"

    @property
    def dim(self) -> int:
        return self.embedder.dim

    @property
    def model_fingerprint(self) -> str:
        return self.embedder.model_fingerprint

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        if self.spinning:
            return self.embedder.embed_pixels(pixels)
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        if len(pixels) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self._encoder(pixels)


class TorchBackend:
    """open_clip's PyTorch model for the bundle's architecture, loaded from ``pretrained``.

    Refuses weights other than the ones the bundle was exported from (the checkpoint's sha256 must equal
    the manifest's ``model.checkpoint.sha256``; a pretrained tag must equal ``model.pretrained``), so the
    index's ``model_fingerprint`` stays honest. fp32 only.
    """

    name = "torch"

    def __init__(
        self,
        manifest: dict[str, Any],
        *,
        pretrained: str | None,
        device: str = "cpu",
        precision: str = "fp32",
        batch_size: int = 32,
    ):
        if precision != "fp32":
            raise UsageError(
                f"--precision {precision}: the torch backend computes fp32 embeddings; "
                "use --precision fp32 (or --backend onnx for the bundle's quantised variants)"
            )
        model = manifest.get("model") or {}
        name, config = model.get("name"), model.get("config")
        if not name:
            raise BuildError("the bundle manifest has no model.name; re-export the bundle")
        checkpoint = model.get("checkpoint") or None
        if not pretrained:
            want = (
                f"the checkpoint file {checkpoint.get('file')!r}"
                if checkpoint
                else f"pretrained tag {model.get('pretrained')!r}"
            )
            raise UsageError(f"--backend torch needs --pretrained: pass {want} the bundle was exported from")
        path = Path(pretrained).expanduser()
        if path.is_file():
            if not checkpoint or not checkpoint.get("sha256"):
                raise BuildError(
                    f"--pretrained {pretrained}: the bundle was exported from pretrained tag "
                    f"{model.get('pretrained')!r}, not a checkpoint file, so the file cannot be verified; "
                    f"pass --pretrained {model.get('pretrained')} or use --backend onnx"
                )
            digest = sha256_file(path)
            if digest != checkpoint["sha256"]:
                raise BuildError(
                    f"--pretrained {pretrained}: sha256 {digest} differs from the checkpoint the bundle was "
                    f"exported from ({checkpoint.get('file')}, sha256 {checkpoint['sha256']}); an index "
                    "built with "
                    "other weights would carry a false model fingerprint. Pass the bundle's checkpoint, or "
                    "re-export the bundle from these weights"
                )
            weights = str(path)
        elif pretrained == model.get("pretrained") and not checkpoint:
            weights = pretrained
        elif os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt")):
            raise UsageError(f"--pretrained {pretrained}: no such checkpoint file")
        else:
            raise BuildError(
                f"--pretrained {pretrained!r} is not the bundle's weights "
                f"(bundle: pretrained={model.get('pretrained')!r}, checkpoint={checkpoint})"
            )

        try:
            import open_clip
            import torch
        except ImportError as e:
            raise BuildError(
                f"--backend torch needs PyTorch and open_clip ({e}); install them "
                "(pip install torch open_clip_torch, see requirements/dev.txt) or use --backend onnx"
            ) from None

        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise UsageError(
                    f"--device {device}: CUDA is not available on this machine; use --device cpu"
                )
            # full fp32 matmuls/convolutions: the vectors must match the bundle's fp32 ONNX model
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        if config and open_clip.get_model_config(name) != config:
            with tempfile.TemporaryDirectory(prefix="index-builder-cfg-") as tmp:
                cfg_path = Path(tmp) / f"{name}.json"
                cfg_path.write_text(json.dumps(config))
                open_clip.add_model_config(cfg_path)
        if open_clip.get_model_config(name) is None:
            raise BuildError(
                f"model {name!r} is neither an open_clip built-in nor described by the bundle's model.config"
            )
        try:
            self.model = open_clip.create_model(name, pretrained=weights, device=device, weights_only=True)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else repr(e)
            raise BuildError(f"cannot load {weights!r} into {name!r}: {msg}") from None
        self.model.eval()
        self.torch = torch
        self.manifest = manifest
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self._dim = int(manifest["embed_dim"])
        self._fingerprint = str(manifest["model_fingerprint"])

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model_fingerprint(self) -> str:
        return self._fingerprint

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        torch = self.torch
        outs = []
        with torch.inference_mode():
            for i in range(0, len(pixels), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(pixels[i : i + self.batch_size], dtype=np.float32))
                y = self.model.encode_image(x.to(self.device, non_blocking=True), normalize=True)
                outs.append(y.float().cpu().numpy())
        out = np.concatenate(outs) if outs else np.zeros((0, self.dim), np.float32)
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def load_backend(opts: BuildOptions, cache_dir: str | None) -> Any:
    """The encoder ``opts`` ask for: open_clip torch with the bundle's weights, or the ONNX bundle."""

    if opts.backend == "torch":
        manifest = read_bundle_manifest(opts.bundle)
        return TorchBackend(
            manifest,
            pretrained=opts.pretrained,
            device=opts.device,
            precision=opts.precision,
            batch_size=opts.batch_size,
        )
    return OnnxBackend(
        opts.bundle,
        precision=opts.precision,
        threads=opts.threads,
        batch_size=opts.batch_size,
        cache_dir=cache_dir,
    )
