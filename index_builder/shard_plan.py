"""Which rows go to which shard of a new version (docs/formats.md, "Index", "Shards").

Stable assignment, so that publishing cost grows with the change: an item whose row and vector equal the
previous version's keeps its shard and local label; a removed or changed item becomes a tombstone of its
shard (the shard's files are carried over by checksum, only the manifest's ``deleted`` list grows); new and
changed items go to the last shard when it is small (a tail being filled) or rebuilt anyway, else to new
shards. A tail that is carried and not tiny is extended (its HNSW graph loaded and the new rows inserted:
work proportional to the new rows, labels and tombstones kept), not rebuilt. A touched shard is rebuilt
(compacted) when it is small (cheap) or its tombstones exceed :data:`TOMBSTONE_MAX`. A build without a
usable previous version splits the rows evenly, in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from handler.core.index_format import ShardSpec

__all__ = ["COMPACT_BELOW", "DEFAULT_SHARD_SIZE", "TOMBSTONE_MAX", "Planned", "PrevShard", "plan_shards"]

#: rows per shard at most. A query searches every shard: K shards cost ~K single searches, which threads
#: spread over the cores (2 here, 6 on a 10 GB Lambda); so few, large shards. 500k x 512-d: ~1.1 GB of HNSW,
#: built in ~2 min on 2 cores; a 1M index is 2 shards searched in parallel, below 500k it is one shard.
DEFAULT_SHARD_SIZE = 500_000
#: a touched shard with fewer rows is rebuilt rather than given tombstones. Measured on 2 cores (M 16,
#: ef_construction 200, 512-d): 2,000 rows build in 0.3 s (+1.0 s calibration, as any touched shard), 10,000
#: rows in 5.1 s (+2.8 s), too much for a publish that should cost what its change costs.
COMPACT_BELOW = 2_000
#: a shard whose deleted rows exceed this fraction of its rows is rebuilt without them.
TOMBSTONE_MAX = 0.2
#: new items join the last shard while it holds fewer than this fraction of ``shard_size`` live rows.
TAIL_FRACTION = 0.25
_CHUNK = 65_536


@dataclass
class PrevShard:
    """A shard of the previous version: its spec, its items file's lines, its embeddings (None: unknown)."""

    spec: ShardSpec
    lines: list[str]
    embeddings: np.ndarray | None


@dataclass
class Planned:
    """A shard of the new version: ``carried`` (files reused; ``deleted`` its new tombstones), built
    from ``live`` (indices into the new rows, in local label order), or ``extends`` a previous shard
    (its labels and ``deleted`` kept, the new rows ``added`` after them). ``live``: the new rows it holds."""

    live: list[int]
    carried: ShardSpec | None = None
    deleted: tuple[int, ...] = ()
    extends: PrevShard | None = None
    added: tuple[int, ...] = ()


def _even(rows: list[int], shard_size: int) -> list[list[int]]:
    if not rows:
        return []
    parts = math.ceil(len(rows) / shard_size)
    return [list(map(int, p)) for p in np.array_split(np.asarray(rows, dtype=np.int64), parts)]


def _match(prev: PrevShard, where: dict[str, int], taken: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Per local label of ``prev``, the new row holding the same line and vector, or -1."""
    local = np.full(prev.spec.count, -1, dtype=np.int64)
    if prev.embeddings is None or len(prev.lines) != prev.spec.count:
        return local
    dead = set(prev.spec.deleted)
    for label, line in enumerate(prev.lines):
        i = where.get(line)
        if i is not None and label not in dead and not taken[i]:
            local[label] = i
    labels = np.flatnonzero(local >= 0)
    for s in range(0, len(labels), _CHUNK):
        part = labels[s : s + _CHUNK]
        same = np.all(np.asarray(prev.embeddings[part], dtype=np.float32) == vectors[local[part]], axis=1)
        local[part[~same]] = -1
    taken[local[local >= 0]] = True
    return local


def plan_shards(
    prev: list[PrevShard] | None, lines: list[str], vectors: np.ndarray, shard_size: int
) -> list[Planned]:
    """The shards of the new version in label order (``lines``: the new rows' items lines)."""
    n = len(lines)
    if not prev:
        return [Planned(rows) for rows in _even(list(range(n)), shard_size)]
    where = {line: i for i, line in enumerate(lines)}
    taken = np.zeros(n, dtype=bool)
    plans: list[Planned] = []
    last_prev: PrevShard | None = None
    for shard in prev:
        local = _match(shard, where, taken, vectors)
        live = [int(i) for i in local[local >= 0]]
        if not live:
            continue  # every row gone: the shard is dropped
        deleted = tuple(int(d) for d in np.flatnonzero(local < 0))
        if len(deleted) == len(shard.spec.deleted):
            plans.append(Planned(live, shard.spec, deleted))  # untouched
        elif shard.spec.count < COMPACT_BELOW or len(deleted) > TOMBSTONE_MAX * shard.spec.count:
            plans.append(Planned(sorted(live)))  # compacted
        else:
            plans.append(Planned(live, shard.spec, deleted))  # tombstones
        last_prev = shard
    pending = [int(i) for i in np.flatnonzero(~taken)]
    if pending and plans:
        last = plans[-1]
        small = last.carried is None or len(last.live) < shard_size * TAIL_FRACTION
        if small and len(last.live) + len(pending) <= shard_size:
            spec = last.carried
            if (
                spec is not None
                and last_prev is not None
                and last_prev.spec is spec
                and COMPACT_BELOW <= spec.count <= shard_size - len(pending)
            ):
                plans[-1] = Planned(last.live + pending, None, last.deleted, last_prev, tuple(pending))
            else:
                plans[-1] = Planned(sorted(last.live + pending))
            pending = []
    plans += [Planned(rows) for rows in _even(pending, shard_size)]
    return plans
