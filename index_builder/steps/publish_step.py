"""Step 3, publish a run: gather reused vectors and the batch outputs, write the version, move the pointer
last, prune, clean the work area, release the lock.

Safe to retry at any point: when the pointer already names the run's version (a publish that died after
moving it), only the clean-up is redone - nothing is published twice. A version left half-written by a
killed publish is deleted and written again (it was never current). An item whose batch never produced an
output (a failed batch within the Map's tolerated failure percentage) is recorded in errors.jsonl as
``not_embedded``; the next build embeds it.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from handler.core.duplicates import duplicate_settings
from handler.core.errors import SearchError
from handler.core.index_format import MANIFEST, read_manifest, read_pointer, version_prefix
from handler.core.storage import Store
from index_builder.errors import BuildError
from index_builder.facts import previous_content
from index_builder.lock import BuildLock, BuildLocked
from index_builder.options import _Log
from index_builder.pipeline import error_row
from index_builder.previous import _item_row, _load_previous_vectors, _Previous
from index_builder.publish import prune, publish
from index_builder.recall import DEFAULT_TARGET_RECALL
from index_builder.shard_plan import DEFAULT_SHARD_SIZE
from index_builder.source_base import SourceItem
from index_builder.steps import work
from index_builder.version_write import BUILDER, write_version

__all__ = ["publish_run"]


def _finish(store: Store, run_id: str, keep: int, log: _Log) -> list[str]:
    pruned: list[str] = []
    try:
        pruned = prune(store, keep)
    except (SearchError, OSError, ValueError) as e:
        log.warn(
            f"version {run_id} is published, but pruning old versions failed ({e}); the next build retries"
        )
    store.delete_prefix(work.run_prefix(run_id))
    store.delete_prefix(work.OUT)
    BuildLock(store).release(run_id)
    return pruned


def _outputs(store: Store, model_key: str) -> dict[str, tuple[dict[str, Any], np.ndarray | None]]:
    """Every chunk output of the model, by item signature (fetched on 16 threads: many small objects)."""
    from concurrent.futures import ThreadPoolExecutor

    keys = [o.key for o in store.list(work.out_prefix(model_key)) if o.key.endswith(".npz")]
    found: dict[str, tuple[dict[str, Any], np.ndarray | None]] = {}
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="gather") as ex:
        chunks = list(ex.map(lambda key: work.read_chunk(store.read_bytes(key)), keys))
    for rows, vectors in chunks:
        for row in rows:
            vec = vectors[row["vec"]] if "vec" in row else None
            found[row["sig"]] = (row, vec)
    return found


def publish_run(
    store: Store, run_id: str, *, quiet: bool = True, lock_ttl: float = 6 * 3600
) -> dict[str, Any]:
    """Publish run ``run_id``. Returns ``{"version", "published": bool, "stats", "pruned", "errors"}``."""
    log = _Log(quiet)
    t0 = time.perf_counter()
    pointer = read_pointer(store)
    try:
        plan = work.read_json(store, work.plan_key(run_id))
    except FileNotFoundError:
        if pointer and pointer["version"] == run_id:  # published and cleaned up already
            BuildLock(store).release(run_id)
            return {
                "version": run_id,
                "published": True,
                "already": True,
                "stats": {},
                "pruned": [],
                "errors": [],
            }
        raise BuildError(f"run {run_id} has no plan in {store.uri}; nothing was published") from None
    opts = plan["options"]
    if pointer and pointer["version"] == run_id:  # a retry after the pointer moved: only clean up
        manifest = read_manifest(store, run_id, pointer["manifest_sha256"])
        pruned = _finish(store, run_id, opts["keep_versions"], log)
        return {
            "version": run_id,
            "published": True,
            "already": True,
            "stats": manifest.get("stats", {}),
            "pruned": pruned,
            "errors": [],
        }
    lock = BuildLock(store, ttl=lock_ttl)
    lock.refresh(run_id)  # BuildLocked if another live build took it (e.g. ours expired)
    before = plan["previous"]["version"] if plan["previous"] else None
    if (pointer["version"] if pointer else None) != before:
        raise BuildError(
            f"{store.uri} moved from version {before} to {pointer['version'] if pointer else None} "
            f"since run {run_id} was planned; start a new build"
        )

    listing = [
        json.loads(line)
        for line in store.read_bytes(work.listing_key(run_id)).decode().splitlines()
        if line.strip()
    ]
    prev: _Previous | None = None
    needs_prev = any(e["state"] == "reuse" for e in listing)
    outputs = _outputs(store, plan["model_key"])
    if not needs_prev:
        needs_prev = any(row.get("previous") for row, _ in outputs.values())
    with tempfile.TemporaryDirectory(prefix="index-publish-") as tmp:
        if pointer is not None and needs_prev:
            prev = _Previous(
                pointer["version"], read_manifest(store, pointer["version"], pointer["manifest_sha256"])
            )
            if not _load_previous_vectors(store, prev, Path(tmp), log):
                raise BuildError(
                    f"the vectors of version {prev.version} cannot be read; nothing was published. "
                    "Start a new build (with --full if this persists)"
                )
        result = _assemble(store, run_id, plan, listing, outputs, prev, log, t0)
    return result


def _assemble(
    store: Store,
    run_id: str,
    plan: dict[str, Any],
    listing: list[dict[str, Any]],
    outputs: dict[str, tuple[dict[str, Any], np.ndarray | None]],
    prev: _Previous | None,
    log: _Log,
    t0: float,
) -> dict[str, Any]:
    opts = plan["options"]
    dim = int(plan["dim"])
    rows: list[dict[str, Any]] = []
    vecs: list[np.ndarray] = []
    listing_errors: list[dict[str, Any]] = []
    embed_errors: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []  # {"id", "uri", "message"} per warning, in source order
    how = {"embedded": 0, "resumed": 0, "unchanged": 0, "reused": 0}
    for e in listing:
        item = SourceItem(
            id=e["id"],
            uri=e["uri"],
            size=e.get("size"),
            mtime=e.get("mtime"),
            etag=e.get("etag"),
            metadata=e.get("metadata") or {},
            key=e.get("key"),
        )
        if e["state"] == "error":  # carried: the same file failed in the previous version (not read again)
            (embed_errors if e.get("carried") else listing_errors).append(error_row(item, *e["error"]))
            continue
        if e["state"] == "reuse":
            assert prev is not None and prev.embeddings is not None
            row = prev.items[e["label"]]
            w, h = row.get("width"), row.get("height")
            rows.append(_item_row(item, row["sha256"], item.size, w, h, previous_content(row)))
            vecs.append(np.asarray(prev.embeddings[e["label"]], dtype=np.float32))
            how["unchanged"] += 1
            continue
        out = outputs.get(work.item_sig(e))
        if out is None:
            embed_errors.append(
                error_row(item, "not_embedded", "its batch failed in this run; the next build embeds it")
            )
            continue
        r, vec = out
        warnings += [{"id": item.id, "uri": item.uri, "message": w} for w in r.get("warnings") or ()]
        if "error" in r:
            embed_errors.append(error_row(item, *r["error"]))
            continue
        if r.get("previous"):
            cached = prev.cached(r["sha256"]) if prev is not None else None
            if cached is None:
                embed_errors.append(
                    error_row(item, "not_embedded", "its previous vector is gone; the next build embeds it")
                )
                continue
            vec = cached.vector
            label = prev.rows.get(item.id) if prev is not None else None
            same = label is not None and prev is not None and prev.items[label].get("sha256") == r["sha256"]
            how["unchanged" if same else "reused"] += 1  # reused: a renamed or copied file
        else:
            how["embedded"] += 1
        assert vec is not None
        rows.append(_item_row(item, r["sha256"], r["size"], r["width"], r["height"], r.get("facts")))
        vecs.append(np.asarray(vec, dtype=np.float32))
    errors = listing_errors + embed_errors
    if opts.get("strict") and errors:
        shown = "\n".join(f"  {e['id']}: {e['reason']}: {e['message']}" for e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise BuildError(
            f"--strict: {len(errors)} file(s) could not be indexed; nothing was published:\n{shown}{more}\n"
            f"(computed embeddings are kept in {store.uri_for(work.OUT)}; fix or remove the files and "
            "re-run)"
        )
    if not rows and not opts.get("allow_empty"):
        first = f", first: {errors[0]['id']}: {errors[0]['message']}" if errors else ""
        raise BuildError(
            f"none of the {len(listing)} image(s) of {opts['source']} could be indexed ({len(errors)} "
            f"error(s){first}); nothing was published"
        )
    vectors = np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
    ids = {r["id"] for r in rows}
    prev_ids = set(prev.rows) if prev is not None else _prev_ids(store, plan)
    stats = {
        **how,
        "added": len(ids - prev_ids),
        "changed": sum(1 for r in rows if r["id"] in prev_ids) - how["unchanged"],
        "removed": len(prev_ids - ids),
        "errors": len(errors),
        "warnings": len(warnings),
        "listed": len(listing),
        "count": len(rows),
        "skipped": plan.get("skipped", {}),
    }
    fields = {
        "model_fingerprint": plan["model_fingerprint"],
        "precision": opts["precision"],
        "source": opts["source"],
        "stats": stats,
        "builder": BUILDER,
        "backend": opts["backend"],
        "previous_version": plan["previous"]["version"] if plan["previous"] else None,
        "image_preprocess": plan.get("image_preprocess"),
        "duplicates": duplicate_settings(opts.get("duplicate_threshold")),
        "build": {
            "steps": True,
            "batch_items": plan["batch_items"],
            "batch_size": opts["batch_size"],
            "max_pixels": opts["max_pixels"],
            "max_file_bytes": opts.get("max_file_bytes"),
            "full": opts["full"],
        },
    }
    prefix = version_prefix(run_id)
    if store.exists(prefix + MANIFEST) or any(True for _ in store.list(prefix)):
        store.delete_prefix(prefix)  # a publish killed before the pointer moved: never current, rewrite it
    manifest = write_version(
        store,
        run_id,
        vectors=vectors,
        items=rows,
        manifest_fields=fields,
        M=opts["M"],
        ef_construction=opts["ef_construction"],
        ef=opts["ef"],
        errors=errors,
        shard_size=opts.get("index_shard_size") or DEFAULT_SHARD_SIZE,
        target_recall=opts.get("target_recall") or DEFAULT_TARGET_RECALL,
    )
    if not BuildLock(store).held_by(run_id):
        raise BuildLocked(
            f"run {run_id} lost the lock of {store.uri} while writing version {run_id}; "
            "the pointer was not moved"
        )
    publish(store, run_id, manifest)
    pruned = _finish(store, run_id, opts["keep_versions"], log)
    return {
        "version": run_id,
        "published": True,
        "already": False,
        "stats": stats,
        "pruned": pruned,
        "errors": errors,
        "warnings": warnings,
        "skipped": stats["skipped"],
        "previous_version": fields["previous_version"],
        "seconds": round(time.perf_counter() - t0, 3),
        "manifest": manifest,
    }


def _prev_ids(store: Store, plan: dict[str, Any]) -> set[Any]:
    if not plan["previous"]:
        return set()
    from index_builder.previous import _previous_ids

    version = plan["previous"]["version"]
    prev = _Previous(version, read_manifest(store, version, plan["previous"]["manifest_sha256"]))
    return set(_previous_ids(store, prev, _Log(True)))
