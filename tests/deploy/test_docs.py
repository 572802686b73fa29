"""docs/deploy.md followed literally must land where the template's defaults look (issue 11, item 22).

The shell commands of the doc are parsed (fenced ``bash`` blocks, continuation lines joined) and every
``s3://bucket/prefix`` they upload to, build from or point the service at is checked against the
``ModelPrefix`` / ``IndexPrefix`` / ``SourcePrefix`` defaults of ``template.yaml``.
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections import defaultdict
from pathlib import Path

import pytest

from scripts import invoke

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_MD = ROOT / "docs" / "deploy.md"
ROLE_OF_FLAG = {"--bundle": "ModelPrefix", "--out": "IndexPrefix", "--source": "SourcePrefix"}
ROLE_OF_ENV = {"MODEL_URI": "ModelPrefix", "INDEX_URI": "IndexPrefix", "SOURCE_URI": "SourcePrefix"}


def shell_commands(markdown: str) -> list[list[str]]:
    """The commands of every ```bash block, tokenised (comments dropped, `\\` continuations joined)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                commands.append(tokens)
    return commands


def split_s3(uri: str) -> tuple[str, str] | None:
    """(bucket, prefix) of a concrete s3:// URI; None for placeholders such as ``s3://...``."""
    m = re.fullmatch(r"s3://([a-z0-9][a-z0-9.-]*)/(.+?)/?", uri)
    return (m.group(1), m.group(2)) if m else None


def s3_locations(commands: list[list[str]]) -> list[tuple[str, str, str, str]]:
    """(role, bucket, prefix, command) for every S3 location the doc's commands use as bundle/index/source."""
    found = []
    bundle_dirs = set()  # local directories written by `python -m export --out DIR`
    for tokens in commands:
        text = " ".join(tokens)
        pairs = list(itertools.pairwise(tokens))
        if "export" in tokens and "-m" in tokens:
            bundle_dirs.update(value.rstrip("/") for flag, value in pairs if flag == "--out")
        for flag, value in pairs:
            if flag in ROLE_OF_FLAG and "index_builder" in tokens and (loc := split_s3(value)):
                found.append((ROLE_OF_FLAG[flag], *loc, text))
        for token in tokens:
            name, _, value = token.partition("=")
            if name in ROLE_OF_ENV and (loc := split_s3(value)):
                found.append((ROLE_OF_ENV[name], *loc, text))
        if tokens[:3] == ["aws", "s3", "sync"] and (loc := split_s3(tokens[4])):
            role = "ModelPrefix" if tokens[3].rstrip("/") in bundle_dirs else "SourcePrefix"
            found.append((role, *loc, text))
    return found


@pytest.fixture(scope="module")
def defaults() -> dict[str, str]:
    params = invoke.load_template(ROOT / "template.yaml")["Parameters"]
    return {name: str(params[name]["Default"]) for name in ROLE_OF_FLAG.values()}


def test_deploy_doc_commands_use_the_template_default_prefixes(defaults):
    found = s3_locations(shell_commands(DEPLOY_MD.read_text(encoding="utf-8")))
    by_role = defaultdict(list)
    for role, _bucket, prefix, command in found:
        by_role[role].append((prefix, command))
    # Upload, build and point-the-service-at commands all exist, so the check cannot pass vacuously.
    assert {role: len(v) >= 2 for role, v in by_role.items()} == dict.fromkeys(ROLE_OF_FLAG.values(), True), (
        found
    )
    wrong = [
        f"{role}: {prefix!r} != template default {defaults[role]!r} in `{command}`"
        for role, items in by_role.items()
        for prefix, command in items
        if prefix != defaults[role]
    ]
    assert not wrong, "\n".join(wrong)


def test_deploy_doc_uses_one_bucket_for_the_walkthrough():
    text = DEPLOY_MD.read_text(encoding="utf-8")
    buckets = {bucket for _role, bucket, _prefix, _cmd in s3_locations(shell_commands(text)) if bucket != "b"}
    deployed = set(re.findall(r"ArtifactBucket=([a-z0-9.-]+)", text))
    created = set(re.findall(r"aws s3 mb s3://([a-z0-9.-]+)", text))
    assert deployed and created, (
        "the doc shows `aws s3 mb` and `sam deploy --parameter-overrides ArtifactBucket=`"
    )
    assert buckets == deployed == created


def test_deploy_doc_parameter_table_states_the_template_defaults(defaults):
    row = next(
        line
        for line in DEPLOY_MD.read_text(encoding="utf-8").splitlines()
        if line.startswith("| `ModelPrefix` / `IndexPrefix` / `SourcePrefix` |")
    )
    stated = re.findall(r"`([^`]+)`", row.split("|")[2])
    assert stated == [defaults["ModelPrefix"], defaults["IndexPrefix"], defaults["SourcePrefix"]]


def test_parser_sees_a_wrong_prefix():
    doc = (
        "```bash\naws s3 sync x/bundle s3://bk/models/other\n.venv/bin/python -m export --out x/bundle\n```\n"
    )
    # sync before export: not known as a bundle dir yet, so it counts as a source upload; order matters.
    assert s3_locations(shell_commands(doc))[0][:3] == ("SourcePrefix", "bk", "models/other")
    doc = "```bash\npython -m export --out x/bundle\naws s3 sync x/bundle s3://bk/models/other\n```\n"
    assert s3_locations(shell_commands(doc))[0][:3] == ("ModelPrefix", "bk", "models/other")
