"""A JSONL manifest (local or ``s3://``): one ``{"id", "uri", ...metadata}`` object a line; ids are the
lines' ``id``, the other fields the item's metadata; items are stat'ed in parallel."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections import Counter
from typing import Any

from handler.core.errors import ConfigError
from handler.core.storage import NotFoundError, Store, TooLargeError, open_store
from handler.core.uri import is_s3, parse_uri, scheme_of
from index_builder.errors import BuildError
from index_builder.source_base import Source, SourceItem, read_local, run_parallel, too_large

__all__ = ["JsonlSource"]


class _Readers:
    """Reads local paths and ``s3://`` URIs; one S3 store per bucket, shared by threads."""

    def __init__(self) -> None:
        self._stores: dict[str, Store] = {}
        self._lock = threading.Lock()

    def store(self, bucket: str) -> Store:
        with self._lock:
            if bucket not in self._stores:
                self._stores[bucket] = open_store(f"s3://{bucket}")
            return self._stores[bucket]

    def read(self, item: SourceItem, limit: int | None) -> bytes:
        if is_s3(item.uri):
            loc = parse_uri(item.uri, check_s3_key=False)
            try:
                return self.store(loc.bucket).read_bytes(loc.key, max_bytes=limit)
            except TooLargeError:
                raise too_large(item, limit) from None
        return read_local(item.uri, item, limit)


class JsonlSource(Source):
    """Lines ``{"id": ..., "uri": ..., ...metadata}``; relative local paths are resolved against the
    manifest's folder (or S3 prefix). Blank lines are ignored; duplicate ids are an error."""

    def __init__(self, uri: str, workers: int = 8):
        self.uri = uri
        self.workers = workers
        self._readers = _Readers()
        self.skipped = Counter()

    def _load_text(self) -> tuple[str, str]:
        """(text, base for relative uris)."""
        loc = parse_uri(self.uri)
        if loc.is_s3:
            parent, _, name = str(loc).rpartition("/")
            store = open_store(parent)
            try:
                raw = store.read_bytes(name)
            except FileNotFoundError:
                raise BuildError(f"--source {self.uri}: no such manifest object") from None
            base = parent + "/"
        else:
            path = loc.local_path().absolute()
            try:
                raw = path.read_bytes()
            except OSError as e:
                raise BuildError(
                    f"--source {self.uri}: cannot read the manifest ({e.strerror or e})"
                ) from None
            base = str(path.parent) + os.sep
            self.uri = str(path)
        try:
            return raw.decode("utf-8"), base
        except UnicodeDecodeError as e:
            raise BuildError(f"--source {self.uri}: not UTF-8 text ({e})") from None

    def list(self) -> list[SourceItem]:
        text, base = self._load_text()
        items: list[SourceItem] = []
        seen: dict[Any, int] = {}
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"--source {self.uri} line {lineno}"
            try:
                row = json.loads(line)
            except ValueError as e:
                raise BuildError(f"{where}: not valid JSON ({e})") from None
            if not isinstance(row, dict):
                raise BuildError(f"{where}: expected a JSON object with 'id' and 'uri'")
            item_id, uri = row.get("id"), row.get("uri")
            if isinstance(item_id, bool) or not isinstance(item_id, (str, int)) or item_id == "":
                raise BuildError(f"{where}: 'id' must be a non-empty string or an integer, got {item_id!r}")
            if not isinstance(uri, str) or not uri:
                raise BuildError(
                    f"{where}: 'uri' must be a non-empty string (local path or s3://...), got {uri!r}"
                )
            if item_id in seen:
                raise BuildError(
                    f"{where}: duplicate id {item_id!r} (first on line {seen[item_id]}); ids must be unique"
                )
            seen[item_id] = lineno
            scheme = scheme_of(uri)
            if scheme not in ("", "file", "s3"):
                raise BuildError(f"{where}: unsupported uri {uri!r} (use a local path or s3://bucket/key)")
            if scheme == "s3":
                uri = "s3" + uri[2:]  # canonical scheme; the bucket and key are checked per item (_stat)
            else:
                try:  # a plain path is taken as is (a colon in a file name is not a scheme)
                    uri = os.path.expanduser(str(parse_uri(uri)) if scheme else uri)
                except ConfigError as e:
                    raise BuildError(f"{where}: {e.message}") from None
                if not os.path.isabs(uri):
                    uri = base + uri if is_s3(base) else os.path.join(base, uri)
                if not is_s3(uri):
                    uri = os.path.normpath(uri)
            metadata = {k: v for k, v in row.items() if k not in ("id", "uri")}
            items.append(SourceItem(id=item_id, uri=uri, metadata=metadata))
        run_parallel(self._stat, items, self.workers)
        return items

    def _stat(self, item: SourceItem) -> None:
        if is_s3(item.uri):
            try:
                loc = parse_uri(item.uri, check_s3_key=False)
                key = loc.key
                store = self._readers.store(loc.bucket)
                for obj in store.list(key):
                    if obj.key == key:
                        item.size, item.mtime, item.etag = obj.size, obj.mtime, obj.etag
                        return
                item.error = ("unreadable", f"no such object: {item.uri}")
            except (NotFoundError, ConfigError, ValueError) as e:  # no such bucket, malformed uri or key
                item.error = ("unreadable", f"cannot stat {item.uri}: {e}")
            # any other StorageError (network, credentials) propagates: the build stops, publishes nothing
            return
        try:
            st = os.stat(item.uri)
        except OSError as e:
            item.error = ("unreadable", f"cannot stat {item.uri}: {e.strerror or e}")
            return
        if not stat.S_ISREG(st.st_mode):
            item.error = ("unreadable", f"{item.uri} is not a regular file")
            return
        item.size, item.mtime = int(st.st_size), float(st.st_mtime)

    def read(self, item: SourceItem) -> bytes:
        return self._readers.read(item, self.max_bytes)
