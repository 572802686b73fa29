"""What a plan takes over from the current version: nothing with --full, another precision or other image
options (said once), and the "no change" comparison of the manifest settings."""

from __future__ import annotations

from typing import Any

import pytest

from handler.core.images import ImageOptions
from handler.core.storage import open_store
from index_builder.options import BuildOptions
from index_builder.steps.plan_previous import previous_rows


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    warn = info


def _opts(**kw: Any) -> BuildOptions:
    return BuildOptions(source="s", bundle="b", out="o", **kw)


@pytest.mark.parametrize(
    ("manifest", "opts"),
    [
        (None, _opts()),
        ({"precision": "fp32"}, _opts(full=True)),
        ({"precision": "int8"}, _opts()),
    ],
)
def test_nothing_is_reused_without_a_comparable_version(
    tmp_path: Any, manifest: Any, opts: BuildOptions
) -> None:
    log = _Log()
    options = ImageOptions(background=opts.background)
    assert previous_rows(open_store(str(tmp_path)), "v1", manifest, opts, options, log) == (None, {})
    assert log.lines == []


def test_other_image_options_embed_everything_again_and_say_why(tmp_path: Any) -> None:
    opts, log = _opts(background=(0, 0, 0)), _Log()
    manifest = {
        "precision": "fp32",
        "image_preprocess": ImageOptions(background=(255, 255, 255)).to_manifest(),
    }
    options = ImageOptions(background=opts.background)
    assert previous_rows(open_store(str(tmp_path)), "v1", manifest, opts, options, log) == (None, {})
    assert len(log.lines) == 1 and "version v1 prepared images with background" in log.lines[0]
    assert log.lines[0].endswith("every image is embedded again")
