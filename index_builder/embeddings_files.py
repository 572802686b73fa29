"""Read precomputed embeddings: a ``.npy`` file with its ids/metadata (JSONL or parquet), or the layout
clip-retrieval's inference writes (``img_emb/img_emb_<N>.npy`` + ``metadata/metadata_<N>.parquet``, matched
by N, rows in order), from a local path or an ``s3://`` URI.

:func:`read_collection` returns one float32 ``[count, dim]`` array, L2-normalised, filled file by file from
memory-mapped ``.npy`` files in blocks (S3 files are downloaded to a temporary directory first, never held in
memory), so the vectors are held once; and one item row (``id``, ``uri``, ``metadata``) per vector. Refused
with a :class:`BuildError` naming the file and row: a vectors file that is not 2-D floating point, files of
different dims, a dim other than the expected one, a row count other than the ids', a row with NaN/infinity
or all zeros, a missing, non-string/integer or duplicate id. Nothing is skipped: an import is all or nothing.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handler.core.errors import ConfigError, SearchError
from handler.core.storage import Store, open_store
from handler.core.uri import parse_uri
from index_builder.errors import BuildError, UsageError
from index_builder.item_rows import jsonl_rows, parquet_rows

__all__ = ["CLIP_RETRIEVAL", "NPY", "Collection", "read_collection"]

CLIP_RETRIEVAL = "clip-retrieval"
NPY = "npy"
BLOCK_ROWS = 16384  # rows normalised per step: bounded temporaries (32 MiB at dim 512)
_EMB = re.compile(r"^img_emb_(\d+)\.npy$")
_META = re.compile(r"^metadata_(\d+)\.parquet$")


@dataclass
class Part:
    """One vectors file and the file holding its rows' ids/metadata."""

    store: Store
    vectors: str  # key in ``store``
    ids_store: Store
    ids: str  # key in ``ids_store`` (.jsonl or .parquet)


@dataclass
class Collection:
    vectors: np.ndarray  # float32 [count, dim], L2-normalised
    rows: list[dict[str, Any]]  # {"id", "uri", "metadata"} per vector
    layout: str  # NPY or CLIP_RETRIEVAL
    files: int  # vectors files read
    dtype: str  # the input's dtype (clip-retrieval writes float16)


def _split(uri: str, what: str) -> tuple[Store, str]:
    """(store of the parent folder / prefix, name) of a file URI."""
    try:
        loc = parse_uri(uri)
        if loc.is_s3:
            parent, _, name = loc.key.rpartition("/")
            return open_store(f"s3://{loc.bucket}/{parent}" if parent else f"s3://{loc.bucket}"), name
        path = loc.local_path()
        return open_store(path.parent), path.name
    except ConfigError as e:
        raise UsageError(f"{what}: {e.message}") from None


def plan_parts(source: str, ids: str | None) -> tuple[str, list[Part]]:
    """The layout of ``source`` and its parts, in order (clip-retrieval files sorted by N)."""
    if source.rstrip("/").lower().endswith(".npy"):
        if not ids:
            raise UsageError(
                f"--source {source} is a .npy file: --ids FILE (.jsonl or .parquet, one row per vector, "
                "each with an 'id') is required"
            )
        store, name = _split(source, "--source")
        ids_store, ids_name = _split(ids, "--ids")
        if not ids_name.lower().endswith((".jsonl", ".parquet")):
            raise UsageError(f"--ids {ids}: expected a .jsonl or .parquet file")
        return NPY, [Part(store, name, ids_store, ids_name)]
    if ids:
        raise UsageError(
            f"--ids is for a .npy --source; {source} is read as a clip-retrieval folder (its metadata "
            "files hold the ids)"
        )
    try:
        store = open_store(source)
        emb = _numbered(store, "img_emb/", _EMB)
        meta = _numbered(store, "metadata/", _META)
    except ConfigError as e:
        raise UsageError(f"--source: {e.message}") from None
    except SearchError as e:
        raise BuildError(f"--source {source}: {e.message}") from None
    if not emb:
        raise BuildError(
            f"--source {source}: no img_emb/img_emb_<N>.npy files (the clip-retrieval inference layout); "
            "for a single .npy file pass its path and --ids"
        )
    missing = sorted(set(emb) - set(meta))
    extra = sorted(set(meta) - set(emb))
    if missing or extra:
        what = f"no metadata/metadata_{missing[0]}.parquet for {emb[missing[0]]}" if missing else ""
        what = what or f"{meta[extra[0]]} has no img_emb/img_emb_{extra[0]}.npy"
        raise BuildError(
            f"--source {source}: embeddings and metadata files do not pair up by number ({what}); "
            "copy the inference output completely"
        )
    return CLIP_RETRIEVAL, [Part(store, emb[n], store, meta[n]) for n in sorted(emb)]


def _numbered(store: Store, prefix: str, pattern: re.Pattern[str]) -> dict[int, str]:
    found: dict[int, str] = {}
    for obj in store.list(prefix):
        m = pattern.match(obj.key[len(prefix) :])
        if m:
            n = int(m.group(1))
            if n in found:
                raise BuildError(f"{store.uri_for(prefix)}: {found[n]} and {obj.key} have the same number")
            found[n] = obj.key
    return found


class _Files:
    """Local paths of store objects: in place for local stores, else downloaded into a temporary folder."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.n = 0

    def path(self, store: Store, key: str) -> Path:
        local = store.local_path(key)
        if local is not None:
            if not local.is_file():
                raise BuildError(f"{store.uri_for(key)}: no such file")
            return local
        self.n += 1
        dest = self.tmp / f"{self.n}-{key.rsplit('/', 1)[-1]}"
        try:
            store.download_file(key, dest)
        except SearchError as e:
            raise BuildError(f"{store.uri_for(key)}: {e.message}") from None
        return dest

    def release(self, path: Path) -> None:
        if path.is_relative_to(self.tmp):
            path.unlink(missing_ok=True)


def _open_vectors(path: Path, where: str) -> np.ndarray:
    try:
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError:  # an empty array cannot be mapped
            arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BuildError(f"{where}: not a readable .npy file ({e})") from None
    if not isinstance(arr, np.ndarray):
        raise BuildError(f"{where}: not a .npy array (an .npz archive?)")
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise BuildError(f"{where}: shape {arr.shape}; expected a 2-D array [rows, dim]")
    if arr.dtype.kind != "f":
        raise BuildError(f"{where}: dtype {arr.dtype}; expected floating point (float16, float32, float64)")
    return arr


def read_collection(
    source: str,
    ids: str | None = None,
    *,
    id_field: str | None = None,
    expect_dim: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> Collection:
    """Read every vector and row of ``source`` (see the module docstring). ``id_field``: the field holding
    the id (default ``id``; clip-retrieval folders without an ``id`` column: ``image_path``);
    ``expect_dim``: the bundle's embed_dim, when one was given."""
    layout, parts = plan_parts(source, ids)
    with tempfile.TemporaryDirectory(prefix="import-embeddings-") as tmp:
        files = _Files(Path(tmp))
        paths = [files.path(p.store, p.vectors) for p in parts]
        arrays = [
            _open_vectors(path, p.store.uri_for(p.vectors)) for p, path in zip(parts, paths, strict=True)
        ]
        first = parts[0].store.uri_for(parts[0].vectors)
        dim, dtype = arrays[0].shape[1], str(arrays[0].dtype)
        for p, arr in zip(parts, arrays, strict=True):
            if arr.shape[1] != dim:
                raise BuildError(
                    f"{p.store.uri_for(p.vectors)}: dim {arr.shape[1]}, but {first} has dim {dim}; all "
                    "vectors of one index come from one model"
                )
        if expect_dim is not None and dim != expect_dim:
            raise BuildError(
                f"--source {source}: the vectors have dim {dim}, but the bundle's model embeds to "
                f"{expect_dim}: they were not made with this model"
            )
        out = np.empty((sum(a.shape[0] for a in arrays), dim), dtype=np.float32)
        rows: list[dict[str, Any]] = []
        for p, path, arr in zip(parts, paths, arrays, strict=True):
            part_rows = _read_rows(files, p, layout, id_field, warn)
            where = p.store.uri_for(p.vectors)
            if len(part_rows) != arr.shape[0]:
                raise BuildError(
                    f"{where} has {arr.shape[0]} rows but {p.ids_store.uri_for(p.ids)} has {len(part_rows)}: "
                    "one id row per vector, in the same order"
                )
            _normalise_into(arr, out[len(rows) : len(rows) + arr.shape[0]], where, part_rows, len(rows))
            rows.extend(part_rows)
            files.release(path)
        del arr
        arrays.clear()  # unmap before the temporary folder goes
    _check_unique(rows)
    return Collection(out, rows, layout, len(parts), dtype)


def _normalise_into(
    src: np.ndarray, dst: np.ndarray, where: str, rows: list[dict[str, Any]], offset: int
) -> None:
    """``dst = src / |src|`` block by block; refuses a row with NaN/infinity or norm 0, naming it."""
    for a in range(0, src.shape[0], BLOCK_ROWS):
        with np.errstate(over="ignore", invalid="ignore"):
            block = np.asarray(src[a : a + BLOCK_ROWS], dtype=np.float32)  # float64 beyond float32: inf
            norms = np.linalg.norm(block, axis=1)
        finite = np.asarray(np.isfinite(block).all(axis=1))
        bad = ~finite | ~np.isfinite(norms) | (norms == 0)
        if bad.any():
            i = int(np.argmax(bad))
            what = (
                "holds NaN or infinity" if not finite[i] else "is all zeros" if norms[i] == 0 else "overflows"
            )
            raise BuildError(
                f"{where} row {a + i} (id {rows[a + i]['id']!r}, row {offset + a + i} of the import) {what}: "
                "it has no direction to search by. Nothing was imported; drop or fix the row"
            )
        np.divide(block, norms[:, None], out=dst[a : a + BLOCK_ROWS])


def _check_unique(rows: list[dict[str, Any]]) -> None:
    ids = [r["id"] for r in rows]
    if len(set(ids)) == len(ids):
        return
    seen: dict[Any, int] = {}
    for i, item_id in enumerate(ids):
        if item_id in seen:
            raise BuildError(
                f"duplicate id {item_id!r} (rows {seen[item_id]} and {i} of the import): ids must be "
                "unique; pass --id-field to use another field"
            )
        seen[item_id] = i


def _read_rows(
    files: _Files, part: Part, layout: str, id_field: str | None, warn: Callable[[str], None] | None
) -> list[dict[str, Any]]:
    where = part.ids_store.uri_for(part.ids)
    path = files.path(part.ids_store, part.ids)
    try:
        if part.ids.lower().endswith(".jsonl"):
            return jsonl_rows(path, where, id_field or "id")
        return parquet_rows(path, where, id_field, "image_path" if layout == CLIP_RETRIEVAL else "id", warn)
    finally:
        files.release(path)
