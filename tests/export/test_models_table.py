"""The coverage-table script on its CI subset (one row per tokenizer type)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "models_table.py"


def test_ci_rows_export_match_and_render(tmp_path):
    spec = importlib.util.spec_from_file_location("models_table", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert {mod.ROWS[r][1] is None for r in mod.CI_ROWS} == {True, False}  # clip_bpe and hf_tokenizers
    out = tmp_path / "models.md"
    assert mod.main(["--only", "ci", "--out", str(out)]) == 0
    text = out.read_text()
    for row in mod.CI_ROWS:
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| {row} |"))
        assert "| ok |" in line and "| equal |" in line, line
    assert "clip_bpe" in text and "hf_tokenizers" in text and "Errors" not in text
