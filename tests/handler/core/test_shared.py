"""The helpers the core now holds once (issue 12 #2): file sha256, usable CPUs, the onnxruntime session
set-up, and the bundle-manifest reader for local and S3 bundles."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

import handler.core.encoders as encoders
import handler.core.storage as storage
from handler.core.bundle import KIND, SCHEMA_VERSION, load_manifest, sha256_file
from handler.core.cpus import usable_cpus
from handler.core.errors import ArtifactError
from handler.core.hashing import file_digest


def test_one_file_digest(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(3 << 20) + b"tail")
    want = hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_digest(path) == (want, path.stat().st_size)
    assert sha256_file(path) == want
    assert storage.file_digest is file_digest  # the storage name is the same function


def test_usable_cpus_follows_the_affinity_mask() -> None:
    assert usable_cpus() == len(os.sched_getaffinity(0))
    assert encoders.default_threads is usable_cpus


@pytest.mark.parametrize(("precision", "spinning"), [("fp32", True), ("fp16", False)])
def test_create_session_options(monkeypatch: pytest.MonkeyPatch, precision: str, spinning: bool) -> None:
    seen: dict[str, Any] = {}

    def fake_session(path: str, opts: Any, providers: list[str]) -> str:
        seen["opts"], seen["providers"] = opts, providers
        return "session"

    monkeypatch.setattr(encoders.ort, "InferenceSession", fake_session)
    assert encoders.create_session("m.onnx", precision, threads=3, spinning=spinning) == "session"
    opts = seen["opts"]
    assert opts.intra_op_num_threads == 3 and opts.inter_op_num_threads == 1
    level = encoders.ort.GraphOptimizationLevel
    assert opts.graph_optimization_level == (
        level.ORT_ENABLE_EXTENDED if precision == "fp16" else level.ORT_ENABLE_ALL
    )
    if not spinning:
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


class _FakeStore:
    def __init__(self, raw: bytes | None):
        self.raw = raw

    def read_bytes(self, key: str) -> bytes:
        if self.raw is None:
            raise storage.NotFoundError(f"no such object: s3://bkt/m/{key}")
        return self.raw

    def uri_for(self, key: str) -> str:
        return f"s3://bkt/m/{key}"


def _manifest(**over: Any) -> bytes:
    m = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "model_fingerprint": "sha256:x",
        "embed_dim": 4,
        "text": {},
        "image": {},
        "precisions": ["fp32"],
        "files": {},
    }
    m.update(over)
    return json.dumps(m).encode()


def test_load_manifest_validates_s3_bundles_like_local_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The builder's S3 reader accepted any JSON object with a model_fingerprint; now one validator."""
    for raw, match in [
        (None, "is not a model bundle"),
        (b"{", "unreadable manifest"),
        (_manifest(kind="other"), "not a clip-onnx-bundle manifest"),
        (_manifest(schema_version=99), "schema_version 99"),
        (json.dumps({"model_fingerprint": "x"}).encode(), "not a clip-onnx-bundle manifest"),
    ]:
        monkeypatch.setattr(storage, "open_store", lambda uri, raw=raw: _FakeStore(raw))
        with pytest.raises(ArtifactError, match=match):
            load_manifest("S3://bkt/m")
    monkeypatch.setattr(storage, "open_store", lambda uri: _FakeStore(_manifest()))
    assert load_manifest("s3://bkt/m")["embed_dim"] == 4
    (tmp_path / "b b").mkdir()
    (tmp_path / "b b" / "manifest.json").write_bytes(_manifest(embed_dim=8))
    assert load_manifest(f"file://{tmp_path}/b%20b")["embed_dim"] == 8


HANDLER = Path(__file__).resolve().parents[3] / "handler"
# Re-exports in modules other issue-12 helpers own (logging, filtered search, app): shrink as they go.
KNOWN_REEXPORTS = {
    "app.py": {"STATIC_DIR"},
    "logs.py": {
        "EMF_NAMESPACE",
        "JsonFormatter",
        "configure_logging",
        "dumps",
        "emit",
        "emit_metrics",
        "log_event",
    },
}


@pytest.mark.parametrize(
    "path",
    sorted(p for p in HANDLER.rglob("*.py") if p.name != "__init__.py"),  # a package's __init__ is its facade
    ids=lambda p: p.relative_to(HANDLER).as_posix(),
)
def test_modules_export_only_what_they_define(path: Path) -> None:
    """Issue 12: no compatibility re-exports (handler.core.index re-listed handler.core.index_format's names,
    handler.core.preprocess handler.core.images', handler.inputs handler.core.query's): a module's
    ``__all__`` names only what it defines, and importers name the defining module."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    exported: list[str] = []
    imported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            exported = list(ast.literal_eval(node.value))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            imported |= {(a.asname or a.name).split(".")[0] for a in node.names}
    known = KNOWN_REEXPORTS.get(path.relative_to(HANDLER).as_posix(), set())
    assert sorted(set(exported) & imported - known) == []
