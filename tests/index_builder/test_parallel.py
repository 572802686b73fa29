"""``index_builder build --parallel N``: plan -> N worker processes -> publish, equal to the serial build,
and finished by a rerun after a SIGKILL at any step (nothing lost, nothing published twice)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handler.core.storage import open_store
from tests.index_builder.conftest import (
    ROOT,
    build_args,
    cli_command,
    collection,
    read_version,
    subprocess_env,
    vectors_by_id,
)


@pytest.fixture
def coll(tmp_path: Path) -> Path:
    src = tmp_path / "coll"
    collection(src, 24, size=48)
    (src / "broken.jpg").write_bytes(b"not an image at all")
    return src


def _same_index(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["items"] == b["items"]
    keys = (
        "id",
        "uri",
        "reason",
        "message",
    )  # the steps add size/mtime to skip the same broken file next time
    assert [{k: e[k] for k in keys} for e in a["errors"]] == [{k: e[k] for k in keys} for e in b["errors"]]
    np.testing.assert_allclose(a["embeddings"], b["embeddings"], atol=1e-6, rtol=0)


def _versions(dest: Path) -> list[str]:
    return sorted(p.name for p in (dest / "versions").iterdir()) if (dest / "versions").is_dir() else []


def test_parallel_equals_serial(cli: Any, coll: Path, demo_bundle: Path, tmp_path: Path) -> None:
    serial, par = tmp_path / "serial", tmp_path / "par"
    assert cli(*build_args(coll, demo_bundle, serial)).rc == 0
    r = cli(*build_args(coll, demo_bundle, par, "--parallel", "2", "--json"))
    assert r.rc == 0, r.err
    assert r.json()["published"] is True and r.json()["stats"]["count"] == 24
    _same_index(read_version(par), read_version(serial))
    assert not (par / ".rebuild").exists(), "work area cleaned, lock released"

    again = cli(*build_args(coll, demo_bundle, par, "--parallel", "2"))
    assert again.rc == 0 and "nothing to do" in again.out
    assert len(_versions(par)) == 1


def test_second_parallel_build_while_one_runs_exits_clearly(
    cli: Any, coll: Path, demo_bundle: Path, tmp_path: Path
) -> None:
    from index_builder.lock import BuildLock

    dest = tmp_path / "idx"
    BuildLock(open_store(dest)).acquire("someone-else")  # a live holder (this process)
    r = cli(*build_args(coll, demo_bundle, dest, "--parallel", "2"))
    assert r.rc == 1 and "another build" in r.err and "nothing was changed" in r.err
    assert _versions(dest) == []


def _wait_for(pred: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def _chunks(dest: Path) -> int:
    return len(list((dest / ".rebuild" / "out").rglob("*.npz"))) if (dest / ".rebuild").exists() else 0


KILL_AT = {
    # run the CLI in-process and SIGKILL ourselves at a publish step
    "after_version_written": "index_builder.steps.publish_step.write_version",
    "after_pointer_moved": "index_builder.steps.publish_step.publish",
}


@pytest.mark.parametrize("where", ["embedding", *KILL_AT])
def test_sigkill_then_rerun_completes(where: str, coll: Path, demo_bundle: Path, tmp_path: Path) -> None:
    serial, dest = tmp_path / "serial", tmp_path / "idx"
    args = build_args(coll, demo_bundle, dest, "--parallel", "2")
    if where == "embedding":
        proc = subprocess.Popen(
            cli_command(*args),
            cwd=ROOT,
            env=subprocess_env(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for(lambda: _chunks(dest) >= 1 or proc.poll() is not None)
            assert proc.poll() is None, "finished before it could be killed"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the parent and its worker processes
            proc.wait()
        assert _versions(dest) == []
    else:
        module, _, name = KILL_AT[where].rpartition(".")
        code = (
            f"import os, signal, {module} as m\n"
            f"real = m.{name}\n"
            f"def dying(*a, **k):\n    r = real(*a, **k)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
            f"m.{name} = dying\n"
            f"from index_builder.cli import main\nmain({[str(a) for a in args]!r})\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=subprocess_env(), capture_output=True
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        assert (dest / ".rebuild" / "LOCK").exists()
    first = _chunks(dest)

    rerun = subprocess.run(
        cli_command(*args, "--json"), cwd=ROOT, env=subprocess_env(), capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert len(_versions(dest)) == 1, "nothing published twice, no orphan version left"
    assert not (dest / ".rebuild").exists()
    subprocess.run(
        cli_command(*build_args(coll, demo_bundle, serial)), cwd=ROOT, env=subprocess_env(), check=True
    )
    _same_index(read_version(dest), read_version(serial))
    if where == "after_pointer_moved":
        assert '"published": false' in rerun.stdout  # it had published; the rerun only cleaned up
    assert first >= 1


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_torch_embed_worker(device: str, cli: Any, coll: Path, demo_bundle: Path, tmp_path: Path) -> None:
    """--backend torch --device cuda (the GPU path; cpu checks the same plumbing here) in the parallel
    workers; vectors close to the ONNX fp32 build."""
    torch = pytest.importorskip("torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    import demo

    onnx, gpu = tmp_path / "onnx", tmp_path / "gpu"
    assert cli(*build_args(coll, demo_bundle, onnx)).rc == 0
    r = cli(
        *build_args(
            coll,
            demo_bundle,
            gpu,
            "--parallel",
            "2",
            "--backend",
            "torch",
            "--device",
            device,
            "--pretrained",
            demo.CHECKPOINT_PATH,
        )
    )
    assert r.rc == 0, r.err
    a, b = read_version(gpu), read_version(onnx)
    assert [i["id"] for i in a["items"]] == [i["id"] for i in b["items"]]
    np.testing.assert_allclose(a["embeddings"], b["embeddings"], atol=2e-3)


def test_metadata_change_alone_publishes_without_embedding(
    cli: Any, coll: Path, demo_bundle: Path, tmp_path: Path
) -> None:
    import json

    dest = tmp_path / "idx"
    assert cli(*build_args(coll, demo_bundle, dest, "--parallel", "2")).rc == 0
    sidecar = sorted(coll.rglob("*.json"))[0]
    sidecar.write_text(json.dumps({"caption": "changed"}))
    r = cli(*build_args(coll, demo_bundle, dest, "--parallel", "2", "--json"))
    assert r.rc == 0 and r.json()["published"] is True
    assert r.json()["stats"]["embedded"] == 0 and r.json()["stats"]["unchanged"] == 24
    rows = {row["uri"]: row for row in read_version(dest)["items"]}
    assert rows[str(sidecar.with_suffix(".jpg"))]["metadata"] == {"caption": "changed"}


def test_renamed_file_reuses_its_vector(cli: Any, coll: Path, demo_bundle: Path, tmp_path: Path) -> None:
    """Like the serial build: a moved file is found by its content hash, not embedded again."""
    from tests.index_builder.conftest import vectors_by_id

    dest = tmp_path / "idx"
    assert cli(*build_args(coll, demo_bundle, dest, "--parallel", "2")).rc == 0
    before = vectors_by_id(read_version(dest))
    old = sorted(p for p in coll.rglob("*.jpg") if p.name != "broken.jpg")[0]
    old_id = old.relative_to(coll).as_posix()
    (coll / "moved").mkdir()
    old.rename(coll / "moved" / "renamed.jpg")
    r = cli(*build_args(coll, demo_bundle, dest, "--parallel", "2", "--json"))
    assert r.rc == 0, r.err
    s = r.json()["stats"]
    assert (s["embedded"], s["reused"], s["added"], s["removed"]) == (0, 1, 1, 1)
    after = vectors_by_id(read_version(dest))
    np.testing.assert_array_equal(after["moved/renamed.jpg"], before[old_id])


def _mixed_collection(src: Path) -> None:
    """The issue 11 cases: a transparent PNG, a file over --max-file-bytes, a skipped .svg, a Pillow warning,
    a symlink out of the folder."""
    from PIL import Image, ImageDraw

    from tests.index_builder.test_pipeline import _jpeg_with_bad_exif

    collection(src, 8, size=48)
    icon = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(icon).ellipse((8, 8, 56, 56), fill=(0, 0, 0, 255))
    icon.save(src / "icon.png")
    (src / "huge.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 50_000)
    (src / "exif.jpg").write_bytes(_jpeg_with_bad_exif((10, 200, 10)))
    (src / "logo.svg").write_text("<svg/>")
    (src / "passwd.jpg").symlink_to("/etc/passwd")


MIXED = ("--max-file-bytes", 40_000, "--background", "#336699")


def test_parallel_equals_serial_with_image_options_and_limits(
    cli: Any, demo_bundle: Path, tmp_path: Path
) -> None:
    """The step-wise build applies the run's --background and --max-file-bytes in every worker and writes the
    serial build's manifest: image_preprocess, stats (skipped, warnings), build limits, errors, vectors."""
    src, serial, par = tmp_path / "src", tmp_path / "serial", tmp_path / "par"
    _mixed_collection(src)
    assert cli(*build_args(src, demo_bundle, serial, *MIXED)).rc == 0
    r = cli(*build_args(src, demo_bundle, par, *MIXED, "--parallel", "2", "--json"))
    assert r.rc == 0, r.err
    a, b = read_version(par), read_version(serial)
    _same_index(a, b)
    assert a["errors"] == b["errors"]  # the same rows, in the same order
    assert {e["id"]: e["reason"] for e in a["errors"]} == {
        "huge.jpg": "file_too_large",
        "passwd.jpg": "outside_root",
    }
    assert (
        a["manifest"]["image_preprocess"]
        == b["manifest"]["image_preprocess"]
        == {"background": "#336699", "jpeg_draft": True}
    )
    assert a["manifest"]["stats"] == b["manifest"]["stats"]
    assert a["manifest"]["stats"]["skipped"] == {".svg": 1} and a["manifest"]["stats"]["warnings"] == 1
    for key in ("max_pixels", "max_file_bytes"):
        assert a["manifest"]["build"][key] == b["manifest"]["build"][key]
    assert a["manifest"]["build"]["max_file_bytes"] == 40_000
    out = r.json()
    assert out["skipped"] == {".svg": 1} and [w["id"] for w in out["warnings"]] == ["exif.jpg"]
    serial_out = cli(*build_args(src, demo_bundle, tmp_path / "serial2", *MIXED, "--json")).json()
    assert set(out) == set(serial_out) and out["warnings"] == serial_out["warnings"]
    # the background was applied: a white-background vector of the transparent icon differs
    white = tmp_path / "white"
    assert cli(*build_args(src, demo_bundle, white, "--max-file-bytes", 40_000)).rc == 0
    icon = vectors_by_id(read_version(white))["icon.png"]
    assert float(icon @ vectors_by_id(a)["icon.png"]) < 0.9999


def test_no_change_and_reuse_agree_with_serial(cli: Any, demo_bundle: Path, tmp_path: Path) -> None:
    """After a serial build the step-wise build finds nothing to do (the same rule, the same errors); other
    image options re-embed every image; an index setting (--ef) alone publishes, as in the serial build."""
    src, dest = tmp_path / "src", tmp_path / "idx"
    _mixed_collection(src)
    assert cli(*build_args(src, demo_bundle, dest, *MIXED)).rc == 0
    first = _versions(dest)
    r = cli(*build_args(src, demo_bundle, dest, *MIXED, "--parallel", "2"))
    assert r.rc == 0 and "nothing to do" in r.out, r.err
    assert _versions(dest) == first

    r = cli(*build_args(src, demo_bundle, dest, "--max-file-bytes", 40_000, "--parallel", "2", "--json"))
    assert r.rc == 0 and r.json()["published"] is True, r.err
    s = r.json()["stats"]
    assert s["embedded"] == s["count"] == 10 and s["unchanged"] == 0, s  # white background: no vector reused
    assert read_version(dest)["manifest"]["image_preprocess"]["background"] == "#ffffff"

    r = cli(
        *build_args(
            src, demo_bundle, dest, "--max-file-bytes", 40_000, "--ef", 64, "--parallel", "2", "--json"
        )
    )
    assert r.rc == 0 and r.json()["published"] is True and r.json()["stats"]["embedded"] == 0, r.err
    assert read_version(dest)["manifest"]["ef"] == 64
    r = cli(*build_args(src, demo_bundle, dest, "--max-file-bytes", 40_000, "--ef", 64, "--json"))
    assert r.rc == 0 and r.json()["published"] is False, "serial agrees: nothing changed"


def test_serial_build_while_the_lock_is_held_exits_clearly(
    cli: Any, coll: Path, demo_bundle: Path, tmp_path: Path
) -> None:
    """The serial build takes the step-wise build's .rebuild/LOCK: the two never run on one index at once."""
    from index_builder.lock import BuildLock

    dest = tmp_path / "idx"
    assert cli(*build_args(coll, demo_bundle, dest)).rc == 0
    before = _versions(dest)
    lock = BuildLock(open_store(dest))
    lock.acquire("step-wise-run")  # a live holder (this process)
    (coll / "new.jpg").write_bytes((coll / "img_00000.jpg").read_bytes())
    r = cli(*build_args(coll, demo_bundle, dest))
    assert r.rc == 1 and "another build" in r.err and "nothing was changed" in r.err, r.err
    assert _versions(dest) == before and lock.held_by("step-wise-run")
    lock.release("step-wise-run")
    r = cli(*build_args(coll, demo_bundle, dest, "--json"))
    assert r.rc == 0 and r.json()["published"] is True
    assert not (dest / ".rebuild").exists(), "the serial build released its lock"
