"""The listing rules every source shares: image names, skip kinds, sidecar names."""

from __future__ import annotations

import pytest

from index_builder.source_base import is_image_name, sidecar_name, skip_kind


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", True),
        ("A.JPEG", True),
        ("x/y.webp", True),
        ("b.ico", True),
        ("c.avif", True),
        ("a.svg", False),
        ("a.json", False),
        ("jpg", False),
        ("a.jpg.txt", False),
    ],
)
def test_is_image_name(name: str, expected: bool) -> None:
    assert is_image_name(name) is expected


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        (".DS_Store", "hidden"),
        (".a.jpg", "hidden"),
        ("logo.SVG", ".svg"),
        ("README", "no extension"),
        ("trailing.", "no extension"),
        ("a.tar.gz", ".gz"),
    ],
)
def test_skip_kind(name: str, kind: str) -> None:
    assert skip_kind(name) == kind


@pytest.mark.parametrize(
    ("name", "sidecar"),
    [
        ("a.jpg", "a.json"),
        ("dir/b.png", "dir/b.json"),
        ("a.b.jpg", "a.b.json"),
        ("noext", "noext.json"),
        (".hidden", ".hidden.json"),
        ("a//b.jpg", "a//b.json"),
    ],
)
def test_sidecar_name(name: str, sidecar: str) -> None:
    assert sidecar_name(name) == sidecar
