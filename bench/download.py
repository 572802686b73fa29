"""Raw concurrent download time of S3 objects, the yardstick of "cold start at the speed of the download".

:func:`raw_download` GETs every byte of some keys with concurrent ranged GETs and throws them away (no
disk, no hash): the time a loader cannot beat with that concurrency. The cold-start benchmark compares its
"first answer" time with it. ``python -m bench.download [--mb 300] [--workers 16]`` starts a local
SeaweedFS (as the tests do), uploads random objects and prints, as JSON, the best of ``--repeat`` runs
of: raw download with 1 and N workers (bytes discarded, and written to disk), and
:func:`handler.core.storage.fetch_files` (write + sha256 while streaming, parts hashed from memory or read
back from the page cache) against a download followed by a separate hashing pass.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from handler.core.hashing import file_digest
from handler.core.storage import S3Store, fetch_files
from handler.core.storage.fetch import DEFAULT_PART_SIZE, DEFAULT_WORKERS


@dataclass(frozen=True)
class Timing:
    bytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else float("inf")


def raw_download(
    store: S3Store,
    keys: Iterable[str],
    *,
    workers: int = DEFAULT_WORKERS,
    part_size: int = DEFAULT_PART_SIZE,
    dest: Path | None = None,
) -> Timing:
    """GET all bytes of ``keys`` (sizes from a HEAD each) with ``workers`` concurrent ranged GETs of
    ``part_size``; bytes are discarded, or with ``dest`` written at their offsets into ``dest/<key>`` (no
    hash, no check: the cost of landing the bytes on local disk). Time from the first HEAD to the last
    byte."""
    t0 = time.perf_counter()
    sizes = {
        k: int(store.client.head_object(Bucket=store.bucket, Key=store._key(k))["ContentLength"])
        for k in keys
    }
    fds: dict[str, int] = {}
    for k, n in sizes.items():
        if dest is not None:
            (dest / k).parent.mkdir(parents=True, exist_ok=True)
            fds[k] = os.open(dest / k, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            os.ftruncate(fds[k], n)
    spans = [(k, s, min(n, s + part_size)) for k, n in sizes.items() for s in range(0, n, part_size)]
    lock = threading.Lock()
    it = iter(spans)
    total = [0]

    def work() -> None:
        while True:
            with lock:
                span = next(it, None)
            if span is None:
                return
            data, _ = store.read_range(*span)
            if span[0] in fds:
                os.pwrite(fds[span[0]], data, span[1])
            with lock:
                total[0] += len(data)

    threads = [threading.Thread(target=work) for _ in range(max(1, min(workers, len(spans))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for fd in fds.values():
        os.close(fd)
    return Timing(total[0], time.perf_counter() - t0)


def timed_fetch(
    store: S3Store, expected: dict[str, dict[str, object]], dest: Path, **kwargs: object
) -> Timing:
    """:func:`fetch_files` of ``expected``'s keys into an empty ``dest`` (sha256 checked while streaming)."""
    t0 = time.perf_counter()
    with fetch_files(store, list(expected), dest, expected=expected, **kwargs) as job:  # type: ignore[arg-type]
        job.wait()
    return Timing(sum(int(str(e["size"])) for e in expected.values()), time.perf_counter() - t0)


def download_then_hash(store: S3Store, keys: list[str], dest: Path, workers: int) -> Timing:
    """Ranged concurrent download without a digest, then one sha256 pass per file (the two-pass way)."""
    t0 = time.perf_counter()
    with fetch_files(store, keys, dest, workers=workers) as job:
        paths = job.wait()
    size = sum(file_digest(p)[1] for p in paths.values())
    return Timing(size, time.perf_counter() - t0)


def _objects(store: S3Store, mb: int, files: int) -> dict[str, dict[str, object]]:
    """Upload ``files`` random objects of ``mb`` MiB in all; their expected size and sha256 by key."""
    expected: dict[str, dict[str, object]] = {}
    for i in range(files):
        data = os.urandom((mb << 20) // files)
        key = f"v/shard-{i}.bin"
        store.write_bytes(key, data)
        expected[key] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return expected


def measure(
    store: S3Store, expected: dict[str, dict[str, object]], tmp: Path, workers: int, part: int, repeat: int
) -> dict[str, Timing]:
    """The best of ``repeat`` runs of each way to get the objects (all in the same conditions)."""
    keys = list(expected)
    ways: dict[str, Callable[[Path], Timing]] = {
        "raw GETs, 1 worker": lambda d: raw_download(store, keys, workers=1, part_size=part),
        f"raw GETs, {workers} workers": lambda d: raw_download(store, keys, workers=workers, part_size=part),
        f"raw GETs to disk, {workers} workers": lambda d: raw_download(
            store, keys, workers=workers, part_size=part, dest=d
        ),
        "fetch_files, 1 worker": lambda d: timed_fetch(store, expected, d, workers=1, part_size=part),
        f"fetch_files, {workers} workers, hash from memory": lambda d: timed_fetch(
            store, expected, d, workers=workers, part_size=part, hash_from="memory"
        ),
        f"fetch_files, {workers} workers, hash read back": lambda d: timed_fetch(
            store, expected, d, workers=workers, part_size=part, hash_from="file"
        ),
        f"fetch_files, {workers} workers, then a sha256 pass": lambda d: download_then_hash(
            store, keys, d, workers
        ),
    }
    best: dict[str, Timing] = {}
    for _ in range(repeat):
        for name, way in ways.items():
            dest = tmp / "dest"
            timing = way(dest)
            shutil.rmtree(dest, ignore_errors=True)
            if name not in best or timing.seconds < best[name].seconds:
                best[name] = timing
    return best


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.conftest import SeaweedS3, find_weed

    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=300, help="total size of the objects (MiB)")
    ap.add_argument("--files", type=int, default=3, help="number of objects")
    ap.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    ap.add_argument("--part-mb", type=int, default=DEFAULT_PART_SIZE >> 20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    binary = find_weed()
    if binary is None:
        print("SeaweedFS `weed` binary not found", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        server = SeaweedS3(binary, tmp / "weed")
        server.start()
        try:
            os.environ.update(server.env())
            store = S3Store(server.make_bucket(), "bench")
            expected = _objects(store, args.mb, args.files)
            best = measure(store, expected, tmp, args.workers, args.part_mb << 20, args.repeat)
        finally:
            server.stop()
    runs = {name: {**asdict(t), "MB_per_s": round(t.mb_per_s, 1)} for name, t in best.items()}
    print(json.dumps({"MiB": args.mb, "files": args.files, "part_MiB": args.part_mb, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
