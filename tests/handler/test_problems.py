"""handler.problems: what /health reports for a failed component and the precision-mismatch warning."""

from __future__ import annotations

from types import SimpleNamespace

from handler.core.errors import ArtifactError
from handler.problems import Problem, precision_mismatch, problem_of


def test_a_search_error_keeps_its_code_and_message() -> None:
    err = ArtifactError("manifest.json is missing")
    assert problem_of("model", err) == Problem("model", err.code, "manifest.json is missing")


def test_any_other_exception_is_a_load_failure_of_its_component() -> None:
    p = problem_of("index", OSError("disk gone"))
    assert (p.code, p.message) == ("index_load_failed", "OSError: disk gone")
    assert p.as_dict() == {"component": "index", "code": "index_load_failed", "message": "OSError: disk gone"}


def test_precision_mismatch_names_both_precisions_and_the_fix() -> None:
    embedder = SimpleNamespace(precision="int8")
    same = SimpleNamespace(manifest={"precision": "int8"}, version="v1")
    unknown = SimpleNamespace(manifest={}, version="v1")
    other = SimpleNamespace(manifest={"precision": "fp32"}, version="v7")
    assert precision_mismatch(embedder, same) is None and precision_mismatch(embedder, unknown) is None
    p = precision_mismatch(embedder, other)
    assert p is not None and p.code == "precision_mismatch" and p.component == "index"
    assert "int8" in p.message and "v7" in p.message and "PRECISION=fp32" in p.message
