"""index_builder.version_settings: the one "no change" rule of the serial and the planned build."""

from __future__ import annotations

import hashlib
from pathlib import Path

from handler.core.images import ImageOptions
from handler.core.index_format import ERRORS_FILE, SCHEMA_VERSION, version_prefix
from handler.core.storage import open_store
from index_builder.version_settings import describe_options, error_rows, image_options_of, same_settings


def test_same_settings_ignores_the_volatile_fields() -> None:
    settings = {"model_fingerprint": "sha256:x", "M": 16, "ef": None, "target_recall": 0.95}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "model_fingerprint": "sha256:x",
        "M": 16,
        "recall": {"target": 0.95, "fixed_ef": None},
        "version": "v1",
        "built_at": "then",
        "stats": {"count": 3},
        "ef": 77,
    }
    assert same_settings(manifest, settings)
    assert not same_settings({**manifest, "M": 32}, settings)
    assert not same_settings({**manifest, "schema_version": -1}, settings)
    assert not same_settings({**manifest, "recall": {"target": 0.9, "fixed_ef": None}}, settings)
    assert not same_settings({**manifest, "source": "elsewhere"}, settings)


def test_error_rows_are_trusted_only_with_a_matching_checksum(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    raw = b'{"id": "a.jpg", "error": "not an image"}\n'
    store.write_bytes(version_prefix("v1") + ERRORS_FILE, raw)
    good = {"files": {ERRORS_FILE: {"sha256": hashlib.sha256(raw).hexdigest()}}}
    assert error_rows(store, "v1", good) == [{"id": "a.jpg", "error": "not an image"}]
    assert error_rows(store, "v1", {"files": {ERRORS_FILE: {"sha256": "0" * 64}}}) is None
    assert error_rows(store, "v1", {"files": {}}) is None


def test_image_options_read_back_and_unreadable_ones_are_none() -> None:
    options = ImageOptions()
    assert image_options_of({"image_preprocess": options.to_manifest()}) == options
    assert image_options_of({"image_preprocess": {"background": "not a colour"}}) is None
    assert describe_options(None) == "unknown options"
    assert describe_options(options).startswith("background ") and "JPEG draft" in describe_options(options)
