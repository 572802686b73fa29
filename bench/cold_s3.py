"""Cold load from S3 (a local SeaweedFS, started as the tests do) against the raw concurrent download of the
same bytes: the yardstick of issue 15's "cold start at the speed of the download" (bench/scale.py runs it;
``python -m bench.cold_s3 INDEX_DIR`` runs it alone on an index directory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def cold_s3(work: Path, root: Path, query: np.ndarray) -> dict[str, Any] | None:
    """Upload the index to a local SeaweedFS; new processes load it from S3 into an empty cache and answer
    one query, alternating with the raw concurrent download of the same files (median of 3 each): the
    files the load fetches (:func:`handler.core.index.fetch_plan` of the current version, not every file
    under ``root``: after the incremental publish that also holds the replaced shards). Two baselines, as
    new processes: interpreter + imports, and that + creating the S3 client (botocore's service model: a
    fixed cost the raw download, on an existing client, does not pay)."""
    from bench.download import raw_download
    from handler.core.index import fetch_plan
    from handler.core.index_format import read_manifest, read_pointer
    from handler.core.storage import S3Store
    from tests.conftest import SeaweedS3, find_weed

    binary = find_weed()
    if binary is None:
        return None
    with tempfile.TemporaryDirectory(prefix="bench-scale-s3-", dir=work) as tmp:
        server = SeaweedS3(binary, Path(tmp) / "weed")
        server.start()
        try:
            env = {**os.environ, **server.env()}
            os.environ.update(server.env())
            server.make_bucket("bench")
            store = S3Store("bench", "index/")
            files = [p for p in root.rglob("*") if p.is_file()]
            for p in files:
                store.upload_file(p.relative_to(root).as_posix(), p)
            pointer = read_pointer(store)
            assert pointer is not None
            manifest = read_manifest(store, pointer["version"], pointer["manifest_sha256"])
            plan = fetch_plan(manifest, local=False)
            np.save(Path(tmp) / "q.npy", query)
            code = (
                "import sys, time, numpy as np; t = time.perf_counter()\n"
                "from handler.core.index import load_index\n"
                "idx = load_index('s3://bench/index/', cache_dir=sys.argv[1])\n"
                "idx.search(np.load(sys.argv[2]), 10)\n"
                "print(time.perf_counter() - t)\n"
            )
            # the same process without the load: interpreter, imports (boto3 too), reading the query
            base_code = code.replace(
                "idx = load_index('s3://bench/index/', cache_dir=sys.argv[1])", "import boto3"
            ).replace("idx.search(np.load(sys.argv[2]), 10)", "np.load(sys.argv[2])")
            client_code = base_code.replace(
                "import boto3", "from handler.core.storage.s3 import s3_client; s3_client()"
            )
            raw, cold, base, client = [], [], [], []
            for i in range(3):
                raw.append(raw_download(store, list(plan)).seconds)
                cache = Path(tmp) / f"cache{i}"
                out = subprocess.run(
                    [sys.executable, "-c", code, str(cache), str(Path(tmp) / "q.npy")],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=900,
                    cwd=Path(__file__).resolve().parent.parent,
                )
                if out.returncode != 0:
                    raise RuntimeError(f"cold load failed: {out.stderr[-2000:]}")
                cold.append(float(out.stdout.strip().splitlines()[-1]))
                out = subprocess.run(
                    [sys.executable, "-c", base_code, str(cache), str(Path(tmp) / "q.npy")],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    cwd=Path(__file__).resolve().parent.parent,
                )
                base.append(float(out.stdout.strip().splitlines()[-1]))
                out = subprocess.run(
                    [sys.executable, "-c", client_code, str(cache), str(Path(tmp) / "q.npy")],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    cwd=Path(__file__).resolve().parent.parent,
                )
                client.append(float(out.stdout.strip().splitlines()[-1]))
            return {
                "raw_s": float(np.median(raw)),
                "cold_s": float(np.median(cold)),
                "imports_s": float(np.median(base)),
                "client_s": float(np.median(client)),
                "bytes": sum(int(e["size"]) for e in plan.values()),
            }
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.cold_s3 INDEX_DIR", file=sys.stderr)
        return 2
    root = Path(args[0])
    pointer = json.loads((root / "CURRENT").read_bytes())
    dim = json.loads((root / "versions" / pointer["version"] / "manifest.json").read_bytes())["dim"]
    query = np.eye(1, dim, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as work:
        out = cold_s3(Path(work), root, query)
    if out is None:
        print("SeaweedFS `weed` binary not found", file=sys.stderr)
        return 2
    fixed = out["client_s"]
    out["ratio"] = (out["cold_s"] - fixed) / out["raw_s"]
    out["load_average"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
