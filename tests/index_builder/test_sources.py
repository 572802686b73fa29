"""open_source: the source kind picked by the URI, and the usage errors for what it cannot open."""

from __future__ import annotations

from pathlib import Path

import pytest

from index_builder.errors import UsageError
from index_builder.source_folder import FolderSource
from index_builder.source_jsonl import JsonlSource
from index_builder.sources import open_source


def test_open_source_dispatches_on_the_uri(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text("")
    assert isinstance(open_source(str(tmp_path)), FolderSource)
    assert isinstance(open_source(f"file://{tmp_path}"), FolderSource)
    assert isinstance(open_source(str(tmp_path / "m.jsonl")), JsonlSource)
    assert isinstance(open_source("s3://bucket/photos/manifest.jsonl"), JsonlSource)
    for bad, message in (
        ("", "is empty"),
        ("  ", "is empty"),
        ("gs://b/p", "unsupported scheme"),
        (str(tmp_path / "missing"), "no such folder or manifest file"),
    ):
        with pytest.raises(UsageError, match=message) as info:
            open_source(bad)
        assert info.value.exit_code == 2
