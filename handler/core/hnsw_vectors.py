"""The stored vectors of an hnswlib index file, read in place (memory-mapped), by label.

An index loaded from S3 has no ``embeddings.npy`` (never on the cold path), yet the exact scans of filtered
search and the "more like this" vectors need stored vectors. hnswlib's ``get_items`` copies them out one
Python list at a time (~75 us per vector); the HNSW file itself, which the cache keeps, holds every vector
at a fixed stride of its level-0 block. This maps that block and reads rows with numpy.

hnswlib's file (``saveIndex``, format of hnswlib 0.7-0.8): a 96-byte header (``offsetLevel0_``,
``max_elements_``, ``cur_element_count``, ``size_data_per_element_``, ``label_offset_``, ``offsetData_`` as
u64; ``maxlevel_`` i32; ``enterpoint_node_`` u32; ``maxM_``, ``maxM0_``, ``M_`` u64; ``mult_`` f64;
``ef_construction_`` u64), then ``cur_element_count`` elements of ``size_data_per_element_`` bytes in
internal-id order: level-0 links, the vector at ``offsetData_``, the u64 label at ``label_offset_``.
Internal ids are insertion order, not labels: the label -> internal id map is built on first use.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["HEADER", "HnswHeader", "HnswVectors", "read_header"]

HEADER = struct.Struct("<6QiI3QdQ")  # 96 bytes


class HnswHeader(NamedTuple):
    """What an hnswlib file's header says of its level-0 block (byte offsets within an element)."""

    offset0: int
    elements: int
    per_element: int
    label_at: int
    data_at: int

    @property
    def data_bytes(self) -> int:
        return self.label_at - self.data_at


def read_header(path: Path) -> HnswHeader:
    """The header of the hnswlib file at ``path``; ``ValueError`` when it is too short to hold one."""
    with open(path, "rb") as f:
        head = f.read(HEADER.size)
    if len(head) < HEADER.size:
        raise ValueError("file too short for an hnswlib header")
    offset0, _max_elements, count, per_element, label_at, data_at = HEADER.unpack(head)[:6]
    return HnswHeader(offset0, count, per_element, label_at, data_at)


class HnswVectors:
    """Vectors of the hnswlib file at ``path`` (``count`` elements of ``dim`` float32), by label. Opened on
    first use; :meth:`rows` raises ``OSError`` / ``ValueError`` when the file is gone or not such a file."""

    def __init__(self, path: Path, count: int, dim: int):
        self.path, self.count, self.dim = Path(path), count, dim
        self._vectors: np.ndarray | None = None
        self._internal: np.ndarray | None = None  # label -> internal id
        self._lock = threading.Lock()

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if self._vectors is None or self._internal is None:
                offset0, count, per_element, label_at, data_at = read_header(self.path)
                if count != self.count or label_at - data_at != 4 * self.dim or offset0 != 0:
                    raise ValueError(
                        f"{self.path}: header does not describe {self.count} x {self.dim} vectors"
                    )
                block = np.memmap(self.path, np.uint8, "r", offset=HEADER.size, shape=(count, per_element))
                labels = block[:, label_at : label_at + 8].view("<u8")[:, 0]
                internal = np.full(count, -1, dtype=np.int64)
                if count:
                    if int(labels.max()) >= count:
                        raise ValueError(f"{self.path}: labels beyond {count}")
                    internal[labels] = np.arange(count)
                if np.any(internal < 0):
                    raise ValueError(f"{self.path}: labels are not 0..{count - 1}")
                self._internal = internal
                self._vectors = block[:, data_at : data_at + 4 * self.dim].view("<f4")
            return self._vectors, self._internal

    def rows(self, labels: np.ndarray) -> np.ndarray:
        """float32 ``[len(labels), dim]``: the stored vectors of these local labels."""
        vectors, internal = self._open()
        return np.array(vectors[internal[np.asarray(labels, dtype=np.int64)]], dtype=np.float32)
