"""The rebuild's work area inside the index store (the index prefix on S3)::

    .rebuild/LOCK                          the build lock (index_builder.lock)
    .rebuild/runs/<run>/listing.jsonl      every listed item, in order, with its fate: reuse | todo | error
    .rebuild/runs/<run>/items.json         the todo items, a JSON array: what the Distributed Map reads
    .rebuild/runs/<run>/known.npz          the previous version's content hashes (sorted) + sizes: a worker
                                           reuses the vector of a renamed or copied file instead of embedding
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

from handler.core.storage import Store
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


def known_key(run_id: str) -> str:
    return run_prefix(run_id) + "known.npz"


def write_known(store: Store, key: str, rows: list[dict[str, Any]]) -> bool:
    """The content hashes (sha256, sorted, as 32-byte strings) of ``rows`` with their width and height."""
    seen: dict[bytes, tuple[int, int]] = {}
    for r in rows:
        sha, w, h = r.get("sha256"), r.get("width"), r.get("height")
        if isinstance(sha, str) and len(sha) == 64 and isinstance(w, int) and isinstance(h, int):
            seen.setdefault(bytes.fromhex(sha), (w, h))
    if not seen:
        return False
    order = sorted(seen)
    buf = io.BytesIO()
    np.savez(
        buf,
        sha256=np.array(order, dtype="S32"),
        width=np.array([seen[k][0] for k in order], np.int32),
        height=np.array([seen[k][1] for k in order], np.int32),
    )
    store.write_bytes(key, buf.getvalue())
    return True


class Known:
    """Lookup in a ``known.npz``: ``(width, height)`` of a content hash the previous version holds."""

    def __init__(self, raw: bytes):
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            self.sha, self.width, self.height = z["sha256"], z["width"], z["height"]

    def get(self, sha: str) -> tuple[int, int] | None:
        key = np.array([bytes.fromhex(sha)], dtype="S32")
        i = int(np.searchsorted(self.sha, key)[0])
        if i < len(self.sha) and self.sha[i] == key[0]:
            return int(self.width[i]), int(self.height[i])
        return None


def out_prefix(model_key: str) -> str:
    return f"{OUT}{model_key}/"


def item_sig(item: dict[str, Any]) -> str:
    """What identifies one input: the same id, uri, size, mtime and etag give the same output."""
    text = json.dumps(
        [item.get("id"), item.get("uri"), item.get("size"), item.get("mtime"), item.get("etag")]
    )
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
