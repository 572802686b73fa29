"""The source listing against the current version's rows: each item is reused (same id, uri, size, mtime,
etag), a carried error (the very same file failed before) or work to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from index_builder.facts import previous_content
from index_builder.previous import _item_row, _unchanged_row
from index_builder.source_base import SourceItem

__all__ = ["Diff", "diff_listing", "item_json"]


@dataclass
class Diff:
    """``listing``: one entry per item with ``state`` reuse / error / todo (the plan's ``listing.jsonl``);
    ``todo``: the embed tasks; ``same_rows``: every reused row and error reads back unchanged;
    ``by_id``: the current version's labels by id."""

    listing: list[dict[str, Any]] = field(default_factory=list)
    todo: list[dict[str, Any]] = field(default_factory=list)
    same_rows: bool = True
    by_id: dict[Any, int] = field(default_factory=dict)


def item_json(item: SourceItem) -> dict[str, Any]:
    d: dict[str, Any] = {"id": item.id, "uri": item.uri, "size": item.size, "mtime": item.mtime}
    if item.etag is not None:
        d["etag"] = item.etag
    if item.key is not None:
        d["key"] = item.key
    return d


def _same_file_failed(item: SourceItem, err: dict[str, Any] | None) -> bool:
    """The item failed in the previous version and is the very same file (not re-read, not retried)."""
    if err is None or item.size is None or err.get("size") is None or err.get("reason") == "not_embedded":
        return False
    return (err.get("uri"), err.get("size"), err.get("mtime"), err.get("etag")) == (
        item.uri,
        item.size,
        item.mtime,
        item.etag,
    )


def _within(row: dict[str, Any], max_pixels: int | None) -> bool:
    """The reused row's image is not over ``max_pixels`` (unknown sizes pass)."""
    w, h = row.get("width"), row.get("height")
    return max_pixels is None or w is None or h is None or w * h <= max_pixels


def diff_listing(
    items: list[SourceItem],
    prev_items: list[dict[str, Any]] | None,
    prev_errors: dict[Any, dict[str, Any]],
    max_pixels: int | None,
) -> Diff:
    """Sort every listed item into reuse / error / todo against ``prev_items`` (None: nothing reusable)."""
    diff = Diff(same_rows=prev_items is not None)
    diff.by_id = {
        row["id"]: label
        for label, row in enumerate(prev_items or [])
        if isinstance(row, dict) and "id" in row
    }
    for item in items:
        entry = {**item_json(item), "metadata": item.metadata}
        label = diff.by_id.get(item.id)
        row = prev_items[label] if prev_items is not None and label is not None else None
        prev_err = prev_errors.get(item.id)
        if item.error is not None or _same_file_failed(item, prev_err):
            if item.error is not None:
                err = list(item.error)
            else:
                assert prev_err is not None  # _same_file_failed
                err = [prev_err["reason"], prev_err["message"]]
            entry.update(state="error", error=err)
            if item.error is None:
                entry["carried"] = (
                    True  # publish lists it with the errors found while embedding (serial order)
                )
            if prev_err is None or [prev_err.get("reason"), prev_err.get("message")] != err:
                diff.same_rows = False
        elif row is not None and _unchanged_row(item, row) and _within(row, max_pixels):
            entry.update(state="reuse", label=label)
            w, h = row.get("width"), row.get("height")
            if _item_row(item, row["sha256"], item.size, w, h, previous_content(row)) != row:
                diff.same_rows = False  # e.g. the sidecar metadata changed
        else:
            entry["state"] = "todo"
            task = item_json(item)
            if row is not None and isinstance(row.get("sha256"), str) and row.get("width") is not None:
                task["prev"] = {"sha256": row["sha256"], "width": row["width"], "height": row["height"]}
            diff.todo.append(task)
            diff.same_rows = False
        diff.listing.append(entry)
    return diff
