"""SIGKILL in the middle of a build: the pointer never moves to an incomplete version, a re-run resumes from
the checkpoint shards and ends with the same index as an uninterrupted build."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from handler.core.index import load_index
from index_builder.workdir import CachedVector, ShardWriter, WorkDir, shard_key
from tests.index_builder.conftest import (
    build_args,
    cli_command,
    collection,
    current,
    ids_of,
    read_version,
    subprocess_env,
    vectors_by_id,
)

SHARD = 16


def _wait_for_shard(proc: subprocess.Popen[bytes], work: Path, timeout: float = 120.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shards = list(work.glob("shards-*/*.npz"))
        if shards:
            return shards
        if proc.poll() is not None:
            _out, err = proc.communicate()
            pytest.fail(f"build exited ({proc.returncode}) before writing a shard:\n{err.decode()[-2000:]}")
        time.sleep(0.002)
    proc.kill()
    pytest.fail("no checkpoint shard appeared")


def test_sigkill_mid_build_then_resume(
    demo_bundle: Path, tmp_path: Path, cli, capsys, record_property
) -> None:
    src, dest = tmp_path / "src", tmp_path / "index"
    first = collection(src / "first", 40, seed=30)
    assert cli(*build_args(src, demo_bundle, dest)).rc == 0
    v1 = current(dest)
    more = collection(src / "more", 400, seed=31)
    total_new = len(more)

    cmd = cli_command(
        *build_args(src, demo_bundle, dest, "--shard-size", SHARD, "--batch-size", SHARD, "--workers", 2)
    )
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_shard(proc, dest / ".work")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # the interrupted build published nothing: the pointer still names the previous complete version
    assert current(dest) == v1
    assert load_index(dest).count == 40
    shards = sorted((dest / ".work").glob("shards-*/*.npz"))
    checkpointed = len(shards) * SHARD
    assert 0 < checkpointed < total_new, f"killed too late: {len(shards)} shards"

    r = cli(*build_args(src, demo_bundle, dest, "--shard-size", SHARD))
    assert r.rc == 0, r.err
    stats = read_version(dest)["manifest"]["stats"]
    record_property("resume", {k: stats[k] for k in ("resumed", "embedded")})
    with capsys.disabled():
        print(
            f"\n[resume] resumed {stats['resumed']} + embedded {stats['embedded']} of {total_new} new images "
            f"({len(shards)} shards survived the kill)"
        )
    assert stats["resumed"] >= checkpointed and stats["embedded"] < total_new
    assert stats["resumed"] + stats["embedded"] == total_new
    assert (stats["unchanged"], stats["added"], stats["removed"], stats["errors"]) == (40, total_new, 0, 0)
    assert not (dest / ".work").exists()

    # the same index as an uninterrupted build
    clean = tmp_path / "clean"
    assert cli(*build_args(src, demo_bundle, clean)).rc == 0
    resumed, uninterrupted = read_version(dest), read_version(clean)
    expected_ids = ids_of(first, src) | ids_of(more, src)
    assert {r["id"] for r in resumed["items"]} == {r["id"] for r in uninterrupted["items"]} == expected_ids
    a, b = vectors_by_id(resumed), vectors_by_id(uninterrupted)
    cos = np.array([float(a[k] @ b[k]) for k in expected_ids])
    assert cos.min() > 0.99999
    index = load_index(dest)
    assert index.count == len(expected_ids)


def test_stale_and_corrupt_shards_are_never_used(tmp_path: Path) -> None:
    dim = 4
    work = WorkDir(tmp_path / "work", shard_key("sha256:a", "fp32", "onnx", dim), {}).open()
    writer = work.shard_writer(shard_size=2)
    vec = np.ones(dim, np.float32) / 2
    writer.add("a" * 64, vec, 10, 20)
    writer.maybe_flush()
    assert not list(work.shard_dir.glob("*.npz"))
    writer.add("b" * 64, vec, 10, 20)
    writer.maybe_flush()
    assert len(list(work.shard_dir.glob("*.npz"))) == 1
    (work.shard_dir / "000009-dead.npz").write_bytes(b"garbage")
    warnings: list[str] = []
    cache, n = work.load_shards(dim, warnings.append)
    assert set(cache) == {"a" * 64, "b" * 64} and n == 2 and isinstance(cache["a" * 64], CachedVector)
    assert cache["a" * 64].width == 10 and len(warnings) == 1 and "000009-dead" in warnings[0]
    work.close()

    # another model / precision / backend: other key, the old shards are discarded, not read
    for key_args in (
        ("sha256:b", "fp32", "onnx"),
        ("sha256:a", "int8", "onnx"),
        ("sha256:a", "fp32", "torch"),
    ):
        other = WorkDir(tmp_path / "work", shard_key(*key_args, dim), {}).open()
        assert other.load_shards(dim, warnings.append)[0] == {}
        other.close()
    other = WorkDir(tmp_path / "work", shard_key("sha256:b", "fp32", "onnx", dim), {}).open()
    assert other.discard_stale() == 1
    assert not work.shard_dir.exists()
    other.clean()
    assert not (tmp_path / "work").exists()


def test_second_build_on_the_same_work_dir_is_refused(tmp_path: Path) -> None:
    from index_builder.errors import BuildError

    a = WorkDir(tmp_path / "w", "k", {}).open()
    with pytest.raises(BuildError, match="another build is running"):
        WorkDir(tmp_path / "w", "k", {}).open()
    a.close()
    WorkDir(tmp_path / "w", "k", {}).open().close()


def test_shard_writer_flushes_on_time(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, shard_size=1000, max_seconds=0.0)
    writer.add("c" * 64, np.ones(3, np.float32), 1, 1)
    writer.maybe_flush()
    assert writer.written == 1 and len(list(tmp_path.glob("*.npz"))) == 1


def test_source_storage_failure_aborts_and_keeps_checkpoints(demo_bundle: Path, tmp_path: Path, cli) -> None:
    """A storage failure while reading the source (not a missing object) aborts the build instead of
    publishing an index with a hole; what was embedded is checkpointed and the re-run resumes."""
    from handler.core.storage import StorageError
    from index_builder.build import build
    from index_builder.errors import BuildError
    from index_builder.options import BuildOptions
    from index_builder.source_folder import FolderSource

    src, dest = tmp_path / "src", tmp_path / "index"
    collection(src, 60, seed=33)
    assert cli(*build_args(src, demo_bundle, dest)).rc == 0
    v1 = current(dest)
    collection(src / "more", 40, seed=34)

    class Flaky(FolderSource):
        reads = 0

        def read(self, item):  # type: ignore[no-untyped-def]
            Flaky.reads += 1
            if Flaky.reads > 20:
                raise StorageError(f"cannot read {item.uri}: connection reset")
            return super().read(item)

    opts = BuildOptions(
        source=str(src),
        bundle=str(demo_bundle),
        out=str(dest),
        batch_size=8,
        shard_size=8,
        workers=1,
        quiet=True,
    )
    with pytest.raises(
        BuildError, match=r"reading the source failed: cannot read .* connection reset"
    ) as exc:
        build(opts, source=Flaky(src))
    assert "re-run" in str(exc.value) and current(dest) == v1
    r = cli(*build_args(src, demo_bundle, dest))
    assert r.rc == 0, r.err
    stats = read_version(dest)["manifest"]["stats"]
    assert stats["resumed"] == 16 and stats["embedded"] == 24 and stats["unchanged"] == 60
