"""Where images come from: a local folder (recursive), an S3 prefix, or a JSONL manifest.

Every source lists :class:`~index_builder.source_base.SourceItem` rows (id, uri, size, mtime, etag,
metadata) cheaply - no image bytes are read while listing, only small JSON sidecars - and reads one item's
bytes on demand (``Source.read``, thread-safe, called from the decode workers). The shared rules are in
:mod:`~index_builder.source_base`; one module per kind: :mod:`~index_builder.source_folder`,
:mod:`~index_builder.source_s3`, :mod:`~index_builder.source_jsonl`. :func:`open_source` picks one by URI.
"""

from __future__ import annotations

from handler.core.errors import ConfigError
from handler.core.storage import S3Store
from handler.core.uri import parse_uri, scheme_of
from index_builder.errors import UsageError
from index_builder.source_base import Source
from index_builder.source_folder import FolderSource
from index_builder.source_jsonl import JsonlSource
from index_builder.source_s3 import S3Source

__all__ = ["open_source"]


def open_source(uri: str, workers: int = 8) -> Source:
    """A folder, ``s3://bucket/prefix`` (a key ending in ``.jsonl`` is a manifest) or a ``.jsonl`` file."""
    if not isinstance(uri, str) or not uri.strip():
        raise UsageError("--source is empty: pass a folder, an s3://bucket/prefix or a JSONL manifest")
    if scheme_of(uri) not in ("", "file", "s3"):
        raise UsageError(
            f"--source {uri!r}: unsupported scheme (use a folder, a .jsonl file or s3://bucket/prefix)"
        )
    try:
        loc = parse_uri(uri)
    except ConfigError as e:
        raise UsageError(f"--source: {e.message}") from None
    if loc.is_s3:
        if loc.key.endswith(".jsonl"):
            return JsonlSource(str(loc), workers)
        return S3Source(S3Store(loc.bucket, loc.key), workers)
    path = loc.local_path()
    if path.is_dir():
        return FolderSource(path)
    if path.is_file():
        return JsonlSource(str(path), workers)
    raise UsageError(f"--source {uri}: no such folder or manifest file")
