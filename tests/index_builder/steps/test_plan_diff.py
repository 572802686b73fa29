"""The plan's diff of a listing against the current version's rows: reuse, carried error, todo."""

from __future__ import annotations

from typing import Any

from index_builder.previous import _item_row
from index_builder.source_base import SourceItem
from index_builder.steps.plan_diff import diff_listing, item_json

SHA = "0" * 64
FACTS = {"type": "jpeg", "camera": None, "gps": None}


def _item(name: str, size: int = 3, **kw: Any) -> SourceItem:
    return SourceItem(id=name, uri=f"/c/{name}", size=size, mtime=1.0, **kw)


def _row(item: SourceItem, width: int = 10, height: int = 20) -> dict[str, Any]:
    return _item_row(item, SHA, item.size, width, height, FACTS)


def test_unchanged_items_are_reused_by_label_and_rows_stay_the_same() -> None:
    a, b = _item("a.jpg"), _item("b.jpg")
    diff = diff_listing([a, b], [_row(a), _row(b)], {}, max_pixels=None)
    assert [(e["id"], e["state"], e.get("label")) for e in diff.listing] == [
        ("a.jpg", "reuse", 0),
        ("b.jpg", "reuse", 1),
    ]
    assert diff.todo == [] and diff.same_rows and diff.by_id == {"a.jpg": 0, "b.jpg": 1}


def test_changed_new_and_oversized_items_are_todo_with_the_previous_hash() -> None:
    a, b, big = _item("a.jpg"), _item("b.jpg"), _item("big.jpg")
    prev = [_row(a), _row(_item("b.jpg", size=4)), _row(big, 1000, 1000)]
    diff = diff_listing([a, b, big, _item("new.jpg")], prev, {}, max_pixels=10_000)
    assert [e["state"] for e in diff.listing] == ["reuse", "todo", "todo", "todo"]
    assert [t["id"] for t in diff.todo] == ["b.jpg", "big.jpg", "new.jpg"]
    assert diff.todo[0]["prev"] == {"sha256": SHA, "width": 10, "height": 20}
    assert "prev" not in diff.todo[2] and not diff.same_rows


def test_changed_sidecar_metadata_is_reused_but_not_the_same_rows() -> None:
    a = _item("a.jpg")
    row = _row(a)
    a.metadata = {"caption": "new"}
    diff = diff_listing([a], [row], {}, max_pixels=None)
    assert diff.listing[0]["state"] == "reuse" and not diff.same_rows


def test_the_same_file_failing_before_is_carried_not_retried() -> None:
    bad = _item("bad.jpg", etag="e1")
    err = {
        "id": "bad.jpg",
        "uri": bad.uri,
        "size": 3,
        "mtime": 1.0,
        "etag": "e1",
        "reason": "decode",
        "message": "m",
    }
    diff = diff_listing([bad], [], {"bad.jpg": err}, max_pixels=None)
    assert diff.listing[0] == {
        **item_json(bad),
        "metadata": {},
        "state": "error",
        "error": ["decode", "m"],
        "carried": True,
    }
    assert diff.todo == [] and diff.same_rows
    touched = _item("bad.jpg", etag="e2")  # another file now: retried
    assert diff_listing([touched], [], {"bad.jpg": err}, max_pixels=None).listing[0]["state"] == "todo"
    not_embedded = {**err, "reason": "not_embedded"}  # an interrupted run's leftover: retried
    assert diff_listing([bad], [], {"bad.jpg": not_embedded}, max_pixels=None).todo != []


def test_listing_errors_are_errors_and_nothing_is_reusable_without_previous_rows() -> None:
    broken = _item("l.jpg", error=("unreadable", "cannot stat"))
    diff = diff_listing([broken, _item("a.jpg")], None, {}, max_pixels=None)
    assert diff.listing[0]["error"] == ["unreadable", "cannot stat"] and "carried" not in diff.listing[0]
    assert [t["id"] for t in diff.todo] == ["a.jpg"] and not diff.same_rows and diff.by_id == {}
