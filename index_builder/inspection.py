"""``info`` (what is published) and ``verify`` (is it intact and consistent) for an index location."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from handler.core.errors import ConfigError, SearchError
from handler.core.index_format import (
    EMBEDDINGS_FILE,
    MANIFEST,
    POINTER,
    SHARDS_PREFIX,
    ShardSpec,
    read_manifest,
    read_pointer,
    shard_specs,
    version_prefix,
)
from handler.core.storage import LocalStore, Store, file_digest, open_store
from index_builder.errors import BuildError, UsageError
from index_builder.publish import list_versions

__all__ = ["index_info", "verify_index"]

_SELF_TOLERANCE = 1e-4  # a unit vector's inner product with itself is 1 up to float32 rounding


def _store(uri: str) -> Store:
    try:
        return open_store(uri)
    except ConfigError as e:
        raise UsageError(e.message) from None


def index_info(uri: str) -> dict[str, Any]:
    """The published version's manifest summary plus the versions present."""
    store = _store(uri)
    try:
        pointer = read_pointer(store)
        if pointer is None:
            raise BuildError(
                f"no index at {store.uri}: {POINTER} is missing; build one with "
                f"`python -m index_builder build --source SRC --bundle BUNDLE --out {uri}`"
            )
        manifest = read_manifest(store, pointer["version"], pointer["manifest_sha256"])
        versions = list_versions(store)
    except SearchError as e:
        raise BuildError(f"{store.uri}: {e.message}") from None
    keys = (
        "version",
        "count",
        "model_fingerprint",
        "dim",
        "precision",
        "built_at",
        "builder",
        "backend",
        "source",
        "stats",
        "M",
        "ef_construction",
        "ef",
        "recall",
        "space",
        "previous_version",
        "build",
        "duplicates",
    )
    info: dict[str, Any] = {"uri": store.uri, **{k: manifest.get(k) for k in keys}}
    info["manifest_sha256"] = pointer["manifest_sha256"]
    info["files"] = manifest["files"]
    info["shards"] = [
        {"count": s.count, "deleted": len(s.deleted), "ef": s.ef, "recall": s.recall}
        for s in shard_specs(manifest)
    ]
    info["versions"] = [
        {"version": v, "complete": complete, "current": v == pointer["version"]}
        for v, complete in sorted(versions.items())
    ]
    return info


def format_info(info: dict[str, Any]) -> str:
    stats = info.get("stats") or {}
    lines = [
        f"index      {info['uri']}",
        f"version    {info['version']}  (built {info.get('built_at')}, {info.get('builder')})",
        f"items      {info['count']}  dim {info['dim']}  precision {info.get('precision')}  backend "
        f"{info.get('backend')}",
        f"model      {info['model_fingerprint']}",
        f"hnsw       M={info.get('M')} ef_construction={info.get('ef_construction')} ef={info.get('ef')} "
        f"recall@10={(info.get('recall') or {}).get('measured')} shards={len(info.get('shards') or [])}",
        f"source     {info.get('source')}",
        "stats      " + ", ".join(f"{k} {v}" for k, v in stats.items()),
        "files      " + ", ".join(f"{n} ({e['size']} B)" for n, e in sorted(info["files"].items())),
        "versions",
    ]
    for v in info["versions"]:
        tag = " (current)" if v["current"] else ("" if v["complete"] else " (incomplete)")
        lines.append(f"  {v['version']}{tag}")
    return "\n".join(lines)


def _bundle_fingerprint(bundle: str) -> str:
    from index_builder.backends import read_bundle_manifest

    return str(read_bundle_manifest(bundle)["model_fingerprint"])


def verify_index(
    uri: str, bundle: str | None = None, *, all_versions: bool = False
) -> tuple[list[str], list[str]]:
    """``(problems, notes)``: every check that failed, naming the file, and what was checked.

    Checks the pointer, the manifest's sha256 against it and its schema, each file's size and sha256, that
    items.jsonl, embeddings.npy and index.hnsw agree with count and dim (unique ids, unit vectors), that the
    index loads and finds each sampled vector, and (``bundle``) the model fingerprint.
    """
    store = _store(uri)
    problems: list[str] = []
    notes: list[str] = []
    try:
        pointer = read_pointer(store)
    except SearchError as e:
        return [e.message], notes
    if pointer is None:
        return [f"{store.uri_for(POINTER)}: missing (no published index)"], notes
    notes.append(f"pointer {store.uri_for(POINTER)} -> version {pointer['version']}")
    targets = [(pointer["version"], pointer["manifest_sha256"])]
    if all_versions:
        try:
            others = [
                v
                for v, complete in sorted(list_versions(store).items())
                if complete and v != pointer["version"]
            ]
        except SearchError as e:
            problems.append(e.message)
            others = []
        targets += [(v, None) for v in others]
    expected_fp = _bundle_fingerprint(bundle) if bundle else None
    for version, sha in targets:
        _verify_version(store, version, sha, expected_fp, bundle, problems, notes)
    return problems, notes


def _verify_version(
    store: Store,
    version: str,
    manifest_sha: str | None,
    expected_fp: str | None,
    bundle: str | None,
    problems: list[str],
    notes: list[str],
) -> None:
    prefix = version_prefix(version)
    try:
        manifest = read_manifest(store, version, manifest_sha)
    except SearchError as e:
        problems.append(e.message)
        return
    notes.append(
        f"{store.uri_for(prefix + MANIFEST)}: valid"
        + (", sha256 matches the pointer" if manifest_sha else "")
    )
    if expected_fp is not None:
        if manifest["model_fingerprint"] != expected_fp:
            problems.append(
                f"version {version}: model_fingerprint {manifest['model_fingerprint']} does not match "
                f"--bundle {bundle} ({expected_fp}); rebuild the index with that bundle"
            )
        else:
            notes.append(f"version {version}: model fingerprint matches --bundle")
    specs = shard_specs(manifest)
    try:
        present = {o.key: o.size for o in store.list(prefix)}
        if manifest["schema_version"] >= 2:
            present.update({o.key: o.size for o in store.list(SHARDS_PREFIX)})
    except SearchError as e:
        problems.append(f"version {version}: cannot list files ({e.message})")
        return
    wanted = {prefix + n: e for n, e in manifest["files"].items()}
    wanted.update({e["key"]: e for spec in specs for e in spec.files.values()})
    for key in sorted(
        k for k in present if k.startswith(prefix) and k not in wanted and k != prefix + MANIFEST
    ):
        notes.append(f"{store.uri_for(key)}: not listed in the manifest (ignored)")
    with tempfile.TemporaryDirectory(prefix="index-verify-") as tmp:
        local: dict[str, Path] = {}
        for key, entry in sorted(wanted.items()):
            where = store.uri_for(key)
            if key not in present:
                problems.append(f"{where}: missing (listed in the manifest)")
                continue
            if present[key] != entry["size"]:
                problems.append(f"{where}: size {present[key]} != manifest {entry['size']}")
                continue
            try:
                if isinstance(store, LocalStore):
                    path = store.root / key
                else:
                    path = Path(tmp) / key
                    store.download_file(key, path)
                digest, _ = file_digest(path)
            except (SearchError, OSError) as e:
                problems.append(f"{where}: cannot read ({e})")
                continue
            if digest != entry["sha256"]:
                problems.append(
                    f"{where}: sha256 {digest} != manifest {entry['sha256']} (file modified or corrupt)"
                )
                continue
            local[key] = path
            notes.append(f"{where}: sha256 ok")
        ids: set[str] = set()
        for spec in specs:
            _check_consistency(manifest["dim"], spec, local, store, problems, notes, ids)


def _check_consistency(
    dim: int,
    spec: ShardSpec,
    local: dict[str, Path],
    store: Store,
    problems: list[str],
    notes: list[str],
    seen_ids: set[str],
) -> None:
    count = spec.count
    keys = {part: e["key"] for part, e in spec.files.items()}
    items: list[Any] | None = None
    if keys.get("items") in local:
        where = store.uri_for(keys["items"])
        try:
            items = [
                json.loads(line)
                for line in local[keys["items"]].read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
        except ValueError as e:
            problems.append(f"{where}: not valid JSON lines ({e})")
        if items is not None:
            ids = [row.get("id") if isinstance(row, dict) else None for row in items]
            dead = set(spec.deleted)
            live_ids = [json.dumps(i) for n, i in enumerate(ids) if n not in dead]
            if len(items) != count:
                problems.append(f"{where}: {len(items)} rows, manifest count {count}")
            elif None in ids:
                problems.append(f"{where}: row {ids.index(None)} has no id")
            elif len(set(live_ids)) != len(live_ids) or seen_ids & set(live_ids):
                problems.append(f"{where}: duplicate ids")
            else:
                notes.append(f"{where}: {count} rows, ids unique")
            seen_ids |= set(live_ids)
    emb = None
    if keys.get("embeddings") in local:
        where = store.uri_for(keys["embeddings"])
        try:
            emb = np.load(local[keys["embeddings"]], allow_pickle=False)
        except (OSError, ValueError) as e:
            problems.append(f"{where}: cannot load ({e})")
        if emb is not None:
            if emb.shape != (count, dim) or emb.dtype != np.float32:
                problems.append(f"{where}: {emb.dtype} {emb.shape}, manifest says float32 ({count}, {dim})")
                emb = None
            elif count and (
                not np.all(np.isfinite(emb)) or np.max(np.abs(np.linalg.norm(emb, axis=1) - 1)) > 1e-3
            ):
                problems.append(f"{where}: vectors are not finite unit vectors")
                emb = None
            else:
                notes.append(f"{where}: float32 ({count}, {dim}), unit norm")
    if keys.get("hnsw") in local:
        where = store.uri_for(keys["hnsw"])
        from handler.core.index import _load_hnsw  # the reader's own header + load checks

        try:
            index = _load_hnsw(local[keys["hnsw"]], dim, count, where)
        except SearchError as e:
            problems.append(e.message)
            return
        if emb is not None and count:
            sample = np.unique(np.linspace(0, count - 1, num=min(count, 64)).astype(np.int64))
            stored = np.asarray(index.get_items(sample, return_type="numpy"), dtype=np.float32)
            if not np.allclose(stored, emb[sample], atol=1e-6):
                problems.append(
                    f"{where}: vectors differ from {EMBEDDINGS_FILE} (rows {sample[:5].tolist()}...)"
                )
            else:
                index.set_ef(max(64, spec.ef))
                labels, distances = index.knn_query(emb[sample], k=1)
                # identical images share a vector: a hit as close as the vector itself (score ~1) counts
                found = float(
                    np.mean((labels[:, 0] == sample) | (1.0 - distances[:, 0] >= 1.0 - _SELF_TOLERANCE))
                )
                if found < 0.95:
                    problems.append(f"{where}: only {found:.0%} of sampled vectors find themselves")
                else:
                    notes.append(
                        f"{where}: {count} vectors, {found:.0%} of {len(sample)} sampled find themselves "
                        "(or an identical vector)"
                    )
