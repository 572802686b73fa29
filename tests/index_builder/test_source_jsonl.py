"""The JSONL manifest source: paths resolved against the manifest, metadata kept, bad lines named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from index_builder.errors import BuildError
from index_builder.source_jsonl import JsonlSource


def test_jsonl_source_resolves_paths_keeps_metadata_and_stats(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"aaaa")
    (tmp_path / "b.jpg").write_bytes(b"bb")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "\n".join(
            [
                json.dumps({"id": "a", "uri": "imgs/a.jpg", "caption": "x"}),
                "",
                json.dumps({"id": 7, "uri": f"file://{tmp_path / 'b.jpg'}"}),
                json.dumps({"id": "gone", "uri": "nope.jpg"}),
            ]
        )
        + "\n"
    )
    source = JsonlSource(str(manifest), workers=2)
    a, b, gone = source.list()
    assert (a.id, a.uri, a.metadata, a.size) == ("a", str(tmp_path / "imgs" / "a.jpg"), {"caption": "x"}, 4)
    assert (b.id, b.uri, b.size, b.error) == (7, str(tmp_path / "b.jpg"), 2, None)
    assert gone.error is not None and gone.error[0] == "unreadable" and gone.size is None
    assert source.read(a) == b"aaaa"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1]", "expected a JSON object"),
        ('{"id": true, "uri": "a.jpg"}', "'id' must be"),
        ('{"id": "", "uri": "a.jpg"}', "'id' must be"),
        ('{"id": "a"}', "'uri' must be"),
        ('{"id": "a", "uri": "http://x/a.jpg"}', "unsupported uri"),
        (
            '{"id": "a", "uri": "a.jpg"}\n{"id": "a", "uri": "b.jpg"}',
            "duplicate id 'a' \\(first on line 1\\)",
        ),
    ],
)
def test_jsonl_source_rejects_bad_lines_naming_the_line(tmp_path: Path, line: str, message: str) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(line + "\n")
    with pytest.raises(BuildError, match=message) as info:
        JsonlSource(str(manifest)).list()
    assert f"{manifest} line " in str(info.value)


def test_jsonl_source_missing_or_binary_manifest(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="cannot read the manifest"):
        JsonlSource(str(tmp_path / "none.jsonl")).list()
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BuildError, match="not UTF-8"):
        JsonlSource(str(tmp_path / "bin.jsonl")).list()
