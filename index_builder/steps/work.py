"""The rebuild's work area inside the index store (the index prefix on S3)::

    .rebuild/LOCK                          the build lock (index_builder.lock)
    .rebuild/runs/<run>/listing.jsonl      every listed item, in order, with its fate: reuse | todo | error
    .rebuild/runs/<run>/items.json         the todo items, a JSON array: what the Distributed Map reads
    .rebuild/runs/<run>/plan.json          options, model, previous version, counts (written last)
    .rebuild/out/<model key>/<chunk>.npz   embed outputs, keyed by the content of the chunk's items

``<run>`` is also the id of the version the run publishes. Outputs are keyed by what went in (item id,
uri, size, mtime, etag) and the model, not by run, so a duplicated, retried or re-planned batch finds its
chunks done. Publish deletes the run's folder and the outputs.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np

from handler.storage import Store
from index_builder.lock import WORK_PREFIX

RUNS = WORK_PREFIX + "runs/"
OUT = WORK_PREFIX + "out/"


def run_prefix(run_id: str) -> str:
    return f"{RUNS}{run_id}/"


def plan_key(run_id: str) -> str:
    return run_prefix(run_id) + "plan.json"


def items_key(run_id: str) -> str:
    return run_prefix(run_id) + "items.json"


def listing_key(run_id: str) -> str:
    return run_prefix(run_id) + "listing.jsonl"


def out_prefix(model_key: str) -> str:
    return f"{OUT}{model_key}/"


def item_sig(item: dict[str, Any]) -> str:
    """What identifies one input: the same id, uri, size, mtime and etag give the same output."""
    text = json.dumps([item.get("id"), item.get("uri"), item.get("size"), item.get("mtime"), item.get("etag")])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def chunk_key(items: list[dict[str, Any]]) -> str:
    return hashlib.sha256("\n".join(item_sig(i) for i in items).encode()).hexdigest()[:32]


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def read_json(store: Store, key: str) -> Any:
    return json.loads(store.read_bytes(key))


def write_chunk(store: Store, key: str, rows: list[dict[str, Any]], vectors: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, vectors=vectors.astype(np.float32), meta=np.frombuffer(dumps(rows), dtype=np.uint8))
    store.write_bytes(key, buf.getvalue())


def read_chunk(raw: bytes) -> tuple[list[dict[str, Any]], np.ndarray]:
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        return json.loads(z["meta"].tobytes()), z["vectors"].astype(np.float32)
