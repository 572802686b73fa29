"""Building and storing the shards of a new version (the writer behind version_write.write_version):
the previous version's shards (for stable assignment, :mod:`index_builder.shard_plan`), one shard's files
built (or a previous shard extended), calibrated (:mod:`index_builder.recall`) and uploaded under their
content address."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from handler.core.errors import ArtifactError, SearchError
from handler.core.index_format import ShardSpec, read_manifest, read_pointer, shard_key, shard_specs
from handler.core.storage import LocalStore, Store, file_digest
from index_builder.recall import Calibration, calibrate, held_out_rows
from index_builder.shard_plan import PrevShard

__all__ = [
    "build_shard",
    "extend_shard",
    "item_line",
    "previous_hnsw",
    "previous_shards",
    "same_recall_settings",
    "version_items",
]

# Manifest settings that must equal the new build's for its shards to be carried over.
_INSERT_CHUNK = 65_536  # rows per add_items call (a copy of the rows each)
_SAME = ("dim", "model_fingerprint", "precision", "space", "M", "ef_construction")


# one encoder for every line (json.dumps with options builds a new one per call)
_LINE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def item_line(row: Mapping[str, Any], what: str, i: int) -> str:
    """One items.jsonl / errors.jsonl line (no newline)."""
    if not isinstance(row, Mapping):
        raise ValueError(f"{what}[{i}] must be a dict, got {type(row).__name__}")
    try:
        return _LINE.encode(row)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}[{i}] is not JSON-serialisable: {e}") from None


def same_recall_settings(manifest: Mapping[str, Any], ef: int | None, target_recall: float) -> bool:
    """Whether ``manifest`` was written with this fixed ``ef`` (None: measured) and recall target."""
    recall = manifest.get("recall") or {}
    return bool(recall.get("target") == target_recall and recall.get("fixed_ef") == ef)


def version_items(store: Store, manifest: dict[str, Any]) -> tuple[list[dict[str, Any]], set[int]]:
    """All rows of a version in label order (tombstoned rows included) and the tombstoned labels.
    Each items file is checked against its sha256 (:class:`ArtifactError` otherwise)."""
    rows: list[dict[str, Any]] = []
    dead: set[int] = set()
    for spec in shard_specs(manifest):
        entry = spec.files["items"]
        raw = store.read_bytes(entry["key"])
        if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
            raise ArtifactError(f"{store.uri_for(entry['key'])}: checksum does not match the manifest")
        dead |= {len(rows) + d for d in spec.deleted}
        rows += [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    return rows, dead


def previous_shards(
    store: Store,
    settings: Mapping[str, Any],
    target_recall: float,
    fixed_ef: int | None,
    tmp: Path,
    fetched: Path | None = None,
) -> list[PrevShard] | None:
    """The current version's shards when they can be carried into a build with ``settings`` (same model,
    precision, HNSW parameters, recall target / fixed ef), else None (everything is built). Items files
    are read and checked; embeddings are memory-mapped: the store's file (local), the copy under
    ``fetched`` (the store's layout; verified by whoever fetched it) or one downloaded to ``tmp`` (S3)."""
    try:
        pointer = read_pointer(store)
        if pointer is None:
            return None
        manifest = read_manifest(store, pointer["version"], pointer["manifest_sha256"])
    except SearchError:
        return None
    if manifest["schema_version"] < 2 or any(manifest.get(k) != settings.get(k) for k in _SAME):
        return None
    if not same_recall_settings(manifest, fixed_ef, target_recall):
        return None
    out: list[PrevShard] = []
    try:
        for spec in shard_specs(manifest):
            raw = store.read_bytes(spec.files["items"]["key"])
            if hashlib.sha256(raw).hexdigest() != spec.files["items"]["sha256"]:
                return None
            lines = [line for line in raw.decode("utf-8").split("\n") if line.strip()]
            emb = None
            entry = spec.files.get("embeddings")
            if entry is not None:
                path = store.local_path(entry["key"]) if isinstance(store, LocalStore) else None
                if path is None and fetched is not None and (fetched / entry["key"]).is_file():
                    path = fetched / entry["key"]
                if path is None:
                    path = tmp / "previous" / entry["key"]
                    store.download_file(entry["key"], path)
                if path.stat().st_size == entry["size"]:
                    emb = np.load(path, mmap_mode="r", allow_pickle=False)
                    if emb.shape != (spec.count, manifest["dim"]):
                        emb = None
            out.append(PrevShard(spec, lines, emb))
    except (SearchError, OSError, ValueError) as e:
        raise ArtifactError(
            f"cannot read the shards of version {pointer['version']} to reuse them ({e})"
        ) from e
    return out


def build_shard(
    store: Store,
    vectors: np.ndarray,
    lines: list[str],
    *,
    M: int,
    ef_construction: int,
    threads: int,
    target_recall: float,
    fixed_ef: int | None,
    work: Path,
) -> tuple[dict[str, Any], int]:
    """Build one shard (HNSW, items, embeddings), measure its ef/recall, upload the files that the store
    does not hold yet. Returns its manifest entry and the bytes uploaded."""
    import hnswlib

    count, dim = vectors.shape
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=max(count, 1), M=M, ef_construction=ef_construction, random_seed=100)
    cal = _insert_calibrated(index, vectors, 0, threads, target_recall, fixed_ef)
    return _store_shard(store, index, vectors, lines, (), cal, work)


def previous_hnsw(store: Store, spec: ShardSpec, work: Path, fetched: Path | None = None) -> Path:
    """A current shard's HNSW file, checked against its sha256: the store's own file (local), ``fetched``'s
    copy, or downloaded once to ``work/previous``."""
    entry = spec.files["hnsw"]
    path = store.local_path(entry["key"])
    if path is None and fetched is not None and (fetched / entry["key"]).is_file():
        path = fetched / entry["key"]
    if path is None:
        path = work / "previous" / entry["key"]
        if not path.is_file():
            store.download_file(entry["key"], path)
    if file_digest(path) != (entry["sha256"], entry["size"]):
        raise ArtifactError(f"{store.uri_for(entry['key'])}: checksum does not match the manifest")
    return path


def extend_shard(
    store: Store,
    base: PrevShard,
    vectors: np.ndarray,
    lines: list[str],
    *,
    deleted: tuple[int, ...],
    threads: int,
    target_recall: float,
    fixed_ef: int | None,
    work: Path,
) -> tuple[dict[str, Any], int]:
    """Shard ``base`` of the previous version with ``vectors`` / ``lines`` added after its labels: its HNSW
    graph is loaded (checksum verified) and only the new rows are inserted; tombstones ``deleted`` are kept.
    Then calibrated and stored as :func:`build_shard` does."""
    import hnswlib

    if base.embeddings is None:
        raise ValueError("a shard is extended from its embeddings")
    path = previous_hnsw(store, base.spec, work)
    count, dim = base.spec.count, vectors.shape[1]
    index = hnswlib.Index(space="ip", dim=dim)
    index.load_index(str(path), max_elements=count + len(vectors))
    data = np.concatenate([np.asarray(base.embeddings, dtype=np.float32), vectors])
    cal = _insert_calibrated(index, data, count, threads, target_recall, fixed_ef)
    return _store_shard(store, index, data, base.lines + lines, deleted, cal, work)


def _insert_calibrated(
    index: Any, data: np.ndarray, start: int, threads: int, target_recall: float, fixed_ef: int | None
) -> Calibration:
    """Insert rows ``start..`` of ``data`` into ``index`` (labels = rows; the earlier rows are in it) and
    calibrate its ef (:mod:`index_builder.recall`): a sample of the new rows is held out of the graph, used
    as the queries, then inserted."""
    new = len(data) - start
    held = start + held_out_rows(new)
    keep = np.ones(new, dtype=bool)
    keep[held - start] = False
    rest = start + np.flatnonzero(keep)
    for s in range(0, len(rest), _INSERT_CHUNK):
        rows = rest[s : s + _INSERT_CHUNK]
        index.add_items(np.asarray(data[rows], dtype=np.float32), rows, num_threads=threads)
    cal = calibrate(index, data, target_recall, fixed_ef=fixed_ef, held_out=held, threads=threads)
    if len(held):
        index.add_items(np.asarray(data[held], dtype=np.float32), held, num_threads=threads)
    return cal


def _store_shard(
    store: Store,
    index: Any,
    vectors: np.ndarray,
    lines: list[str],
    deleted: tuple[int, ...],
    cal: Calibration,
    work: Path,
) -> tuple[dict[str, Any], int]:
    """Write the files of ``index`` (over ``vectors``, labels = rows, calibrated: ``cal``) and upload those
    the store does not hold yet (content-addressed: present means identical)."""
    index.set_ef(cal.ef)
    paths = {"hnsw": work / "shard.hnsw", "items": work / "shard.jsonl", "embeddings": work / "shard.npy"}
    index.save_index(str(paths["hnsw"]))
    del index
    with open(paths["items"], "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    np.save(paths["embeddings"], vectors, allow_pickle=False)
    files: dict[str, dict[str, Any]] = {}
    uploaded = 0
    for part, path in paths.items():
        digest, size = file_digest(path)
        files[part] = {"sha256": digest, "size": size}
        key = shard_key(part, digest)
        if not store.exists(key):
            store.upload_file(key, path)
            uploaded += size
        path.unlink()
    entry = {
        "count": len(vectors),
        "deleted": list(deleted),
        "ef": cal.ef,
        "recall": round(cal.recall, 4),
        "recall_queries": cal.queries,
        "ef_by_query": {kind: ef for kind, (ef, _) in cal.by_query.items()},
        "recall_by_query": {kind: round(r, 4) for kind, (_, r) in cal.by_query.items()},
        "files": files,
    }
    return entry, uploaded
