"""A local folder, listed recursively: ids are paths relative to the folder (POSIX). Symlinks are followed
only to files inside the folder; a broken or outward link is an item error, not an abort."""

from __future__ import annotations

import builtins
import os
import stat
from collections import Counter
from pathlib import Path, PurePosixPath

from index_builder.errors import BuildError
from index_builder.source_base import (
    HIDDEN,
    SIDECAR_SUFFIX,
    Source,
    SourceItem,
    is_image_name,
    parse_sidecar,
    read_local,
    sidecar_name,
    skip_kind,
)

__all__ = ["FolderSource"]


class FolderSource(Source):
    def __init__(self, root: Path):
        self.root = root.expanduser().absolute()
        self.uri = str(self.root)
        self.skipped = Counter()

    def _inside(self, path: str) -> bool:
        """Whether a symlink resolves to a file inside the collection folder (links out are not followed)."""
        real = os.path.realpath(path)
        return os.path.commonpath([real, self._real_root]) == self._real_root

    def list(self) -> list[SourceItem]:
        items: list[SourceItem] = []
        self.skipped = Counter()
        self._real_root = os.path.realpath(self.root)
        self._walk(self.root, "", items)
        items.sort(key=lambda it: str(it.id))
        return items

    def _walk(self, directory: Path, rel: str, out: builtins.list[SourceItem]) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as e:
            if directory == self.root:
                raise BuildError(
                    f"--source {self.root}: cannot list the folder ({e.strerror or e})"
                ) from None
            self.warn(f"cannot list folder {directory} ({e.strerror or e}); skipped")
            return
        names = {e.name for e in entries}
        sidecars = {sidecar_name(n) for n in names if is_image_name(n)}
        for entry in entries:
            if entry.name.startswith("."):
                self.skipped[HIDDEN] += 1
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                self._walk(Path(entry.path), f"{rel}{entry.name}/", out)
                continue
            if not is_image_name(entry.name):
                if entry.name not in sidecars:
                    self.skipped[skip_kind(entry.name)] += 1
                continue
            item = SourceItem(id=rel + entry.name, uri=entry.path)
            if entry.is_symlink() and not self._inside(entry.path):
                item.error = (
                    "outside_root",
                    f"{entry.path} is a symlink to a file outside {self.root}; not followed",
                )
                out.append(item)
                continue
            try:
                st = os.stat(entry.path)  # follows symlinks: broken links and loops fail here
            except OSError as e:
                item.error = ("unreadable", f"cannot stat {entry.path}: {e.strerror or e}")
                out.append(item)
                continue
            if stat.S_ISDIR(st.st_mode):
                if entry.is_symlink():  # a link to a folder named like an image: not followed
                    item.error = (
                        "unreadable",
                        f"{entry.path} is a symlink to a directory, not an image file",
                    )
                    out.append(item)
                continue
            if not stat.S_ISREG(st.st_mode):
                item.error = ("unreadable", f"{entry.path} is not a regular file")
                out.append(item)
                continue
            item.size, item.mtime = int(st.st_size), float(st.st_mtime)
            sidecar = str(PurePosixPath(entry.name).with_suffix(SIDECAR_SUFFIX))
            if sidecar in names:
                path = Path(directory) / sidecar
                if path.is_symlink() and not self._inside(str(path)):
                    self.warn(f"sidecar {path} is a symlink out of {self.root}; not followed, no metadata")
                    out.append(item)
                    continue
                try:
                    item.metadata = parse_sidecar(path.read_bytes(), str(path), self.warn)
                except OSError as e:
                    self.warn(f"cannot read sidecar {path} ({e.strerror or e}); indexing without metadata")
            out.append(item)

    def read(self, item: SourceItem) -> bytes:
        return read_local(item.uri, item, self.max_bytes)
