"""Writing one index version (docs/formats.md, "Index"): :func:`write_version` checks its inputs, builds or
carries its shards (:mod:`index_builder.shard_plan`, :mod:`index_builder.shard_write`), writes
``errors.jsonl`` and ``duplicates.jsonl`` and ``manifest.json`` last. Moving the pointer is
:mod:`index_builder.publish`'s job."""

from __future__ import annotations

import json
import secrets
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from handler.core import __version__
from handler.core.cpus import usable_cpus
from handler.core.duplicates import DUPLICATES_FILE, duplicate_settings, write_duplicates
from handler.core.index_format import (
    ERRORS_FILE,
    KIND,
    MANIFEST,
    QUERY_KINDS,
    SCHEMA_VERSION,
    ShardSpec,
    read_pointer,
    version_prefix,
)
from handler.core.storage import Store, file_digest, open_store
from index_builder.duplicates_incremental import version_duplicate_groups
from index_builder.recall import DEFAULT_TARGET_RECALL, EF_MIN
from index_builder.shard_plan import DEFAULT_SHARD_SIZE, Planned, plan_shards
from index_builder.shard_write import build_shard, extend_shard, item_line, previous_shards

__all__ = ["BUILDER", "new_version_id", "write_version"]

BUILDER = f"index_builder {__version__}"
# Manifest keys computed by write_version; manifest_fields may not set them.
_COMPUTED = (
    "schema_version",
    "kind",
    "version",
    "dim",
    "count",
    "space",
    "M",
    "ef_construction",
    "ef",
    "ef_by_query",
    "recall",
    "shards",
    "sharding",
    "files",
)
_NORM_TOLERANCE = 1e-3


def new_version_id() -> str:
    """A new, lexicographically sortable version id: UTC timestamp (microseconds) + random suffix,
    e.g. ``20261123T120000123456Z-1a2b3c``."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def _as_store(store: Store | str) -> Store:
    return store if isinstance(store, Store) else open_store(store)


def _check_inputs(vectors: np.ndarray, items: Sequence[Mapping[str, Any]]) -> np.ndarray:
    arr = np.asarray(vectors)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"vectors must have shape [count, dim], got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"vectors must be floating point, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.shape[0] != len(items):
        raise ValueError(f"{arr.shape[0]} vectors but {len(items)} items")
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError("vectors contain NaN or infinity")
    if arr.shape[0]:
        norms = np.linalg.norm(arr, axis=1)
        worst = int(np.argmax(np.abs(norms - 1.0)))
        if abs(norms[worst] - 1.0) > _NORM_TOLERANCE:
            raise ValueError(f"vectors must be L2-normalised: row {worst} has norm {norms[worst]:.6f}")
    seen: dict[Any, int] = {}
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "id" not in item:
            raise ValueError(f"items[{i}] must be a dict with an 'id'")
        item_id = item["id"]
        if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
            raise ValueError(f"items[{i}]['id'] must be a string or an integer, got {item_id!r}")
        if item_id in seen:
            raise ValueError(f"duplicate item id {item_id!r} (items {seen[item_id]} and {i})")
        seen[item_id] = i
    return arr


def _ef_by_query(shards: list[dict[str, Any]]) -> dict[str, int]:
    """Per query kind, the largest of the shards' efs (a shard without per-kind efs counts with its ef)."""
    return {
        kind: max([int((s.get("ef_by_query") or {}).get(kind, s["ef"])) for s in shards] or [EF_MIN])
        for kind in QUERY_KINDS
    }


def _carried_entry(spec: ShardSpec, deleted: tuple[int, ...]) -> dict[str, Any]:
    files = {p: {"sha256": e["sha256"], "size": e["size"]} for p, e in spec.files.items()}
    return {
        "count": spec.count,
        "deleted": list(deleted),
        "ef": spec.ef,
        "recall": spec.recall,
        **({"ef_by_query": dict(spec.ef_by_query)} if spec.ef_by_query else {}),
        **({"recall_by_query": dict(spec.recall_by_query)} if spec.recall_by_query else {}),
        "files": files,
    }


def _write_shard(
    store: Store,
    plan: Planned,
    arr: np.ndarray,
    lines: list[str],
    M: int,
    ef_construction: int,
    threads: int | None,
    target_recall: float,
    ef: int | None,
    work: Path,
) -> tuple[dict[str, Any], int]:
    """Build (or extend, for a carried tail: only the new rows are inserted) and upload one planned shard."""
    threads = threads or usable_cpus()
    if plan.extends is not None:
        new = list(plan.added)
        return extend_shard(
            store,
            plan.extends,
            np.ascontiguousarray(arr[np.asarray(new, dtype=np.int64)]),
            [lines[i] for i in new],
            deleted=plan.deleted,
            threads=threads,
            target_recall=target_recall,
            fixed_ef=ef,
            work=work,
        )
    return build_shard(
        store,
        np.ascontiguousarray(arr[np.asarray(plan.live, dtype=np.int64)]),
        [lines[i] for i in plan.live],
        M=M,
        ef_construction=ef_construction,
        threads=threads,
        target_recall=target_recall,
        fixed_ef=ef,
        work=work,
    )


def write_version(
    store: Store | str,
    version_id: str,
    *,
    vectors: np.ndarray,
    items: Sequence[Mapping[str, Any]],
    manifest_fields: Mapping[str, Any],
    M: int = 16,
    ef_construction: int = 200,
    ef: int | None = None,
    errors: Iterable[Mapping[str, Any]] = (),
    threads: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    target_recall: float = DEFAULT_TARGET_RECALL,
    reuse: bool = True,
    previous_dir: Path | None = None,
) -> dict[str, Any]:
    """Build and store a version: its shards (``shards/<sha256>.{hnsw,jsonl,npy}``, only those the store
    does not hold yet), ``versions/<version_id>/errors.jsonl``, then ``manifest.json`` last. Returns the
    manifest. Does not move the pointer: call :func:`publish`.

    ``vectors``: float ``[count, dim]``, L2-normalised; ``items``: one dict per row, each with a unique
    ``id`` (str or int) - :meth:`SearchIndex.get_item` looks items up by it. ``manifest_fields`` must
    hold ``model_fingerprint`` and may hold ``precision`` (default ``fp32``), ``source``, ``stats``
    (``errors`` defaults to ``len(errors)``), ``built_at``, ``builder``, ``duplicates``
    (``{"threshold", "k"}`` of :func:`duplicate_settings`: near-duplicate groups of the whole collection,
    written as ``versions/<id>/duplicates.jsonl`` and counted in ``stats.duplicate_groups``; with ``reuse``,
    updated from the current version's groups when found with the same settings,
    :mod:`index_builder.duplicates_incremental`); the computed
    fields cannot be overridden. ``threads``: hnswlib build threads (default: all cores).

    Shards hold at most ``shard_size`` rows. With ``reuse``, the current version's shards are carried
    over where their items are unchanged (:mod:`index_builder.shard_plan`), so labels may not follow the
    order of ``items``. Each built shard's ef is the smallest reaching ``target_recall`` recall@10
    (:mod:`index_builder.recall`), or ``ef`` when given (its recall is still measured); the version's ef is
    the largest of its shards'. An empty collection (count 0) is allowed; its SearchIndex returns no hits.
    ``previous_dir``: where the current version's shard files were already fetched from a remote store
    (its layout, checksums verified), so that they are not downloaded again.
    """
    store = _as_store(store)
    prefix = version_prefix(version_id)
    clash = sorted(set(_COMPUTED) & set(manifest_fields))
    if clash:
        raise ValueError(f"manifest_fields may not set computed field(s) {clash}")
    fingerprint = manifest_fields.get("model_fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ValueError("manifest_fields must hold a non-empty 'model_fingerprint'")
    for name, value, low in (
        ("M", M, 2),
        ("ef_construction", ef_construction, 1),
        ("ef", 1 if ef is None else ef, 1),
        ("shard_size", shard_size, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    dup = manifest_fields.get("duplicates")
    if dup is not None:
        if not isinstance(dup, Mapping) or set(dup) != {"threshold", "k"}:
            raise ValueError(
                f"manifest_fields['duplicates'] must be {{'threshold', 'k'}} or None, got {dup!r}"
            )
        duplicate_settings(dup["threshold"], dup["k"])
    if not isinstance(target_recall, float) or not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be a number in (0, 1], got {target_recall!r}")
    items = list(items)
    arr = _check_inputs(vectors, items)
    errors = list(errors)
    count, dim = arr.shape
    pointer = read_pointer(store)
    if pointer is not None and pointer["version"] == version_id:
        raise ValueError(f"version {version_id!r} is the current version of {store.uri}; use a new id")
    if store.exists(prefix + MANIFEST):
        raise ValueError(f"version {version_id!r} already exists in {store.uri}; use a new id")
    lines = [item_line(row, "items", i) for i, row in enumerate(items)]
    error_lines = [item_line(row, "errors", i) for i, row in enumerate(errors)]
    settings = {
        "dim": int(dim),
        "model_fingerprint": fingerprint,
        "precision": manifest_fields.get("precision", "fp32"),
        "space": "ip",
        "M": M,
        "ef_construction": ef_construction,
    }
    shards: list[dict[str, Any]] = []
    built = uploaded = 0
    with tempfile.TemporaryDirectory(prefix="index-build-") as tmp:
        work = Path(tmp)
        prev = (
            previous_shards(store, settings, target_recall, ef, work, previous_dir)
            if reuse and count
            else None
        )
        for plan in plan_shards(prev, lines, arr, shard_size):
            if plan.carried is not None:  # files reused by checksum: nothing built or uploaded
                shards.append(_carried_entry(plan.carried, plan.deleted))
                continue
            entry, sent = _write_shard(
                store, plan, arr, lines, M, ef_construction, threads, target_recall, ef, work
            )
            shards.append(entry)
            built += 1
            uploaded += sent
        errors_path = work / ERRORS_FILE
        errors_path.write_text("".join(line + "\n" for line in error_lines), encoding="utf-8")
        digest, size = file_digest(errors_path)
        store.upload_file(prefix + ERRORS_FILE, errors_path)
        files = {ERRORS_FILE: {"sha256": digest, "size": size}}
        duplicate_groups = 0
        if dup is not None:  # the current version's groups updated with the change, or found in full
            ids = [it["id"] for it in items]
            groups = version_duplicate_groups(
                store, prev, dup, arr, lines, ids, threads=threads, work=work, fetched=previous_dir
            )
            duplicate_groups = write_duplicates(work / DUPLICATES_FILE, groups, ids)
            dup_digest, dup_size = file_digest(work / DUPLICATES_FILE)
            store.upload_file(prefix + DUPLICATES_FILE, work / DUPLICATES_FILE)
            files[DUPLICATES_FILE] = {"sha256": dup_digest, "size": dup_size}
    measured = [s["recall"] for s in shards if s.get("recall") is not None]
    stats = dict(manifest_fields.get("stats") or {})
    stats.setdefault("errors", len(errors))
    if dup is not None:
        stats["duplicate_groups"] = duplicate_groups
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "version": version_id,
        "model_fingerprint": fingerprint,
        "precision": "fp32",
        "dim": int(dim),
        "count": int(count),
        "space": "ip",
        "M": M,
        "ef_construction": ef_construction,
        "ef": ef if ef is not None else max([int(s["ef"]) for s in shards] or [EF_MIN]),
        **({} if ef is not None else {"ef_by_query": _ef_by_query(shards)}),
        "recall": {"k": 10, "target": target_recall, "fixed_ef": ef, "measured": min(measured, default=None)},
        "shards": shards,
        "sharding": {
            "shard_size": shard_size,
            "shards": len(shards),
            "built": built,
            "uploaded_bytes": uploaded,
        },
        "files": files,
        "built_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "builder": BUILDER,
        "source": None,
    }
    manifest.update({k: v for k, v in manifest_fields.items() if k != "stats"})
    manifest["stats"] = stats
    data = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    store.write_bytes(prefix + MANIFEST, data)
    return manifest
