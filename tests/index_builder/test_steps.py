"""The rebuild as plan -> embed -> publish: the Step Functions handlers with the exact event shapes against
SeaweedFS S3, the state machine of template.yaml walked in order, the lock, and the concurrency cases."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handler.core.index import load_index
from handler.core.index_format import read_pointer
from handler.core.storage import open_store
from index_builder.lock import LOCK_KEY, BuildLock, BuildLocked
from index_builder.steps import BatchIncomplete, embed_batch, publish_run, work
from tests.index_builder.conftest import collection, read_version, vectors_by_id
from tests.index_builder.sfn_local import Failed, LocalStateMachine

pytestmark = pytest.mark.s3


def _upload(s3: Any, bucket: str, local: Path, prefix: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local).as_posix()}")


@pytest.fixture(scope="module")
def bucket(s3_server: Any, demo_bundle: Path) -> str:
    """One bucket per module with the demo bundle at the template's default ModelPrefix."""
    name = s3_server.make_bucket()
    _upload(s3_server.client(), name, demo_bundle, "models/clip")
    return name


@pytest.fixture
def stack(s3_server: Any, bucket: str, tmp_path: Path) -> dict[str, Any]:
    """A 30-image collection and an empty index under a prefix of their own (template parameters)."""
    import uuid

    s3 = s3_server.client()
    prefix = uuid.uuid4().hex[:8]
    coll = tmp_path / "coll"
    collection(coll, 30, size=48)
    _upload(s3, bucket, coll, f"{prefix}/collection")
    return {
        "s3": s3,
        "bucket": bucket,
        "coll": coll,
        "prefix": prefix,
        "index": f"s3://{bucket}/{prefix}/indexes/clip",
        "params": {
            "ArtifactBucket": bucket,
            "SourcePrefix": f"{prefix}/collection",
            "IndexPrefix": f"{prefix}/indexes/clip",
        },
    }


class Deadline:
    """A Lambda context whose remaining time allows ``chunks`` chunk(s) per invocation."""

    def __init__(self, chunks: int):
        self.chunks = chunks
        self.calls = 0

    def get_remaining_time_in_millis(self) -> int:
        self.calls += 1
        return 900_000 if self.calls <= self.chunks else 5_000


# small batches (3 chunks of 4 images) so that a 30-image build has several batches
SMALL = {"PlanFunction": {"EMBED_RATE": "0.02", "CHUNK_ITEMS": "4"}}


def _machine(stack: dict[str, Any], **kw: Any) -> LocalStateMachine:
    return LocalStateMachine(stack["params"], stack["s3"], env_overrides=SMALL, **kw)


def test_state_machine_from_template_builds_in_order(stack: dict[str, Any]) -> None:
    """Plan -> Distributed Map over the plan's S3 todo list (ItemBatcher batches) -> publish, each Task the
    handler template.yaml names; every embed worker has time for one chunk only, so each batch (3 chunks)
    completes through BatchIncomplete + Retry - a first build larger than one worker's time limit."""
    contexts: list[Deadline] = []

    def context(state: str) -> Deadline:
        contexts.append(Deadline(1))
        return contexts[-1]

    sm = _machine(stack, context=context)
    out = sm.run({})
    assert out["published"] is True and out["stats"]["count"] == 30 and out["stats"]["embedded"] == 30
    names = [name for name, _ in sm.calls]
    assert names[0] == "Plan" and names[-1] == "Publish"
    batches = [ev for name, ev in sm.calls if name == "EmbedBatch"]
    assert {tuple(ev) for ev in batches} == {("Items", "BatchInput")}
    assert len({json.dumps(ev["Items"]) for ev in batches}) == 3  # 12 + 12 + 6 images
    assert len(batches) == 3 + 3 + 2  # one call per chunk: the retries continued where the last stopped
    index = load_index(stack["index"])
    assert len(index) == 30
    vecs_first = vectors_by_id(read_version(stack["index"]))
    store = open_store(stack["index"])
    assert not list(store.list(".rebuild/")), "publish cleans the work area and releases the lock"

    # the same execution input again: nothing changed, nothing published
    again = _machine(stack).run({})
    assert again["changed"] is False and again["version"] == out["version"]
    assert read_pointer(store)["version"] == out["version"]

    # one image replaced by new content: only it is embedded; the rest reused by label
    victim = sorted(p for p in stack["coll"].rglob("*.jpg"))[0]
    rel = victim.relative_to(stack["coll"]).as_posix()
    fresh = collection(stack["coll"].parent / "fresh", 1, seed=99, size=48)[0]
    stack["s3"].upload_file(str(fresh), stack["bucket"], f"{stack['prefix']}/collection/{rel}")
    third = _machine(stack).run({})
    assert third["stats"]["embedded"] == 1 and third["stats"]["unchanged"] == 29
    assert third["stats"]["changed"] == 1
    v = read_version(stack["index"])
    assert not np.allclose(vectors_by_id(v)[rel], vecs_first[rel], atol=1e-3)


def test_second_start_exits_clearly_and_changes_nothing(stack: dict[str, Any]) -> None:
    from index_builder.sfn_handlers import plan_handler

    sm = _machine(stack)
    fn, env = sm.handler("PlanFunction")
    assert fn is plan_handler
    results: list[Any] = []

    def start() -> None:
        try:
            results.append(sm._task("Plan", sm.definition["States"]["Plan"], {}))
        except Failed as e:
            results.append(e)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if isinstance(r, dict)]
    lost = [r for r in results if isinstance(r, Failed)]
    assert len(won) == 1 and len(lost) == 1, results
    assert (
        lost[0].error == "BuildLocked"
        and "another build" in lost[0].cause
        and "nothing was changed" in lost[0].cause
    )
    store = open_store(stack["index"])
    runs = {o.key.split("/")[2] for o in store.list(work.RUNS)}
    assert runs == {won[0]["run_id"]}, "the loser wrote nothing"
    assert read_pointer(store) is None
    # the winner's run goes on to publish through the rest of the machine
    fn, env = sm.handler("EmbedFunction")
    items = json.loads(stack["s3"].get_object(**won[0]["items"])["Body"].read())
    from tests.index_builder.sfn_local import _environ

    with _environ(env):
        fn({"Items": items, "BatchInput": {"run_id": won[0]["run_id"]}}, None)
    pub, env = sm.handler("PublishFunction")
    with _environ(env):
        assert pub(won[0], None)["published"] is True
    assert not store.exists(LOCK_KEY)


def _plan_run(stack: dict[str, Any]) -> dict[str, Any]:
    sm = _machine(stack)
    return sm._task("Plan", sm.definition["States"]["Plan"], {})


def test_duplicated_batch_delivery_writes_the_same_result(stack: dict[str, Any]) -> None:
    summary = _plan_run(stack)
    store = open_store(stack["index"])
    items = work.read_json(store, work.items_key(summary["run_id"]))
    batch = items[:12]
    results: list[dict[str, Any]] = []
    threads = [
        threading.Thread(target=lambda: results.append(embed_batch(store, summary["run_id"], batch)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and all(r["chunks"] == 3 for r in results)
    again = embed_batch(store, summary["run_id"], batch)  # a third delivery finds it done
    assert again["found"] == 3 and again["embedded"] == 0
    embed_batch(store, summary["run_id"], items[12:])
    out = publish_run(store, summary["run_id"])
    assert out["stats"]["count"] == 30
    ids = [row["id"] for row in read_version(stack["index"])["items"]]
    assert len(ids) == len(set(ids)) == 30


def test_worker_out_of_time_raises_and_the_retry_continues(stack: dict[str, Any]) -> None:
    summary = _plan_run(stack)
    store = open_store(stack["index"])
    items = work.read_json(store, work.items_key(summary["run_id"]))[:12]
    deadline = Deadline(1)
    with pytest.raises(BatchIncomplete, match="1 of 3 chunk"):
        embed_batch(
            store,
            summary["run_id"],
            items,
            remaining_s=lambda: deadline.get_remaining_time_in_millis() / 1000,
        )
    done = embed_batch(store, summary["run_id"], items)
    assert done["found"] == 1 and done["embedded"] == 8


def test_publish_retried_after_the_pointer_moved(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from index_builder.steps import publish_step

    summary = _plan_run(stack)
    store = open_store(stack["index"])
    embed_batch(store, summary["run_id"], work.read_json(store, work.items_key(summary["run_id"])))

    def dies(*a: Any, **k: Any) -> None:
        raise ConnectionError("publish function killed after moving the pointer")

    monkeypatch.setattr(publish_step, "_finish", dies)
    with pytest.raises(ConnectionError):
        publish_run(store, summary["run_id"])
    assert read_pointer(store)["version"] == summary["run_id"]
    monkeypatch.undo()
    versions_before = {o.key.split("/")[1] for o in store.list("versions/")}
    retried = publish_run(store, summary["run_id"])
    assert retried["already"] is True and retried["stats"]["count"] == 30
    assert {o.key.split("/")[1] for o in store.list("versions/")} == versions_before, (
        "nothing published twice"
    )
    assert not list(store.list(".rebuild/"))
    again = publish_run(store, summary["run_id"])  # a third time, after the clean-up: still fine
    assert again["already"] is True


def test_lock_takeover_after_expiry_and_release_only_by_owner(s3_server: Any) -> None:
    store = open_store(f"s3://{s3_server.make_bucket()}/idx")
    lock = BuildLock(store, ttl=3600)
    assert lock.acquire("run-a") is None
    with pytest.raises(BuildLocked, match="run run-a"):
        BuildLock(store).acquire("run-b")
    lock.release("run-b")  # not the holder: no effect
    assert lock.held_by("run-a")
    expired = BuildLock(store, ttl=-1)
    expired.release("run-a")
    expired.acquire("run-c")  # already expired when written
    taken = BuildLock(store).acquire("run-d")
    assert taken is not None and taken.data["run_id"] == "run-c"
    assert lock.held_by("run-d")


def test_local_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = open_store(tmp_path / "idx")
    code = (
        "import sys; from handler.core.storage import open_store; from index_builder.lock import BuildLock; "
        f"BuildLock(open_store({str(tmp_path / 'idx')!r})).acquire('dead-run')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
    taken = BuildLock(store).acquire("new-run")
    assert taken is not None and taken.data["run_id"] == "dead-run"
    with pytest.raises(BuildLocked):
        BuildLock(store).acquire("third-run")  # we are alive


def test_embed_handler_refuses_other_shapes() -> None:
    from index_builder.lambda_job import RebuildFailed
    from index_builder.sfn_handlers import embed_handler, publish_handler

    with pytest.raises(RebuildFailed, match="ItemBatcher"):
        embed_handler([{"id": 1}])
    with pytest.raises(RebuildFailed, match="run_id"):
        embed_handler({"Items": [], "BatchInput": {}})
    with pytest.raises(RebuildFailed, match="plan summary"):
        publish_handler({"Items": []})


def test_redrive_after_a_failed_batch(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch that fails after its retries fails the Map (threshold 0); redriving the execution re-runs the
    Map and Publish with the same plan: the finished batches are found, the run publishes once."""
    from index_builder.steps import embed as embed_mod

    real = embed_mod._embed_chunk
    broken = {"on": True, "calls": 0}
    victim = sorted(p.relative_to(stack["coll"]).as_posix() for p in stack["coll"].rglob("*.jpg"))[-1]

    def flaky(items: list[dict[str, Any]], *a: Any) -> Any:
        if broken["on"] and any(i["id"] == victim for i in items):
            broken["calls"] += 1
            raise OSError("the source is unreachable from this worker")
        return real(items, *a)

    monkeypatch.setattr(embed_mod, "_embed_chunk", flaky)
    sm = _machine(stack)
    with pytest.raises(Failed, match="ExceedToleratedFailureThreshold"):
        sm.run({})
    assert broken["calls"] == 4, "tried once plus the 3 retries of the States.ALL retrier"
    assert [name for name, _ in sm.calls].count("Plan") == 1
    store = open_store(stack["index"])
    assert read_pointer(store) is None and store.exists(LOCK_KEY)
    done_before = len(list(store.list(work.OUT)))

    # redrive: Step Functions re-runs the failed Map (only failed batches would run; running all is a
    # superset, and the finished ones find their chunks) and then Publish, with the states' saved input
    broken["on"] = False
    summary = sm.calls[0][1]  # Plan's input; its output is what the Map got:
    plan_out = json.loads(json.dumps(_last_plan_output(sm)))
    sm._map(sm.definition["States"]["Embed"], plan_out)
    out = sm._task("Publish", sm.definition["States"]["Publish"], plan_out)
    assert summary == {} and out["published"] is True and out["stats"]["count"] == 30
    assert out["version"] == plan_out["run_id"] and read_pointer(store)["version"] == out["version"]
    assert done_before >= 1 and not store.exists(LOCK_KEY)


def _last_plan_output(sm: LocalStateMachine) -> dict[str, Any]:
    batch = next(ev for name, ev in sm.calls if name == "EmbedBatch")
    run_id = batch["BatchInput"]["run_id"]
    return sm.plan_outputs[run_id]


def test_tolerated_failures_publish_the_rest_and_list_them(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within RebuildToleratedFailurePercentage the run publishes; the failed batch's images are errors
    (not_embedded) and the next run embeds them."""
    from index_builder.steps import embed as embed_mod

    real = embed_mod._embed_chunk
    victim = sorted(p.relative_to(stack["coll"]).as_posix() for p in stack["coll"].rglob("*.jpg"))[-1]
    broken = {"on": True}

    def flaky(items: list[dict[str, Any]], *a: Any) -> Any:
        if broken["on"] and any(i["id"] == victim for i in items):
            raise OSError("the source is unreachable from this worker")
        return real(items, *a)

    monkeypatch.setattr(embed_mod, "_embed_chunk", flaky)
    env = {"PlanFunction": {**SMALL["PlanFunction"], "TOLERATED_FAILURE_PERCENTAGE": "50"}}
    out = LocalStateMachine(stack["params"], stack["s3"], env_overrides=env).run({})
    lost = 30 - out["stats"]["count"]
    assert out["published"] is True and 1 <= lost <= 12 and out["errors"] == lost
    errors = read_version(stack["index"])["errors"]
    assert {e["reason"] for e in errors} == {"not_embedded"} and victim in {e["id"] for e in errors}
    broken["on"] = False
    again = _machine(stack).run({})
    assert again["stats"]["count"] == 30 and again["stats"]["embedded"] == lost


def test_background_in_the_execution_input(stack: dict[str, Any], demo_bundle: Path, tmp_path: Path) -> None:
    """``{"background": "black"}`` reaches every embed worker through the plan: the transparent icon gets the
    serial build's vector, the manifest records it; a later default run re-embeds every image (white)."""
    from PIL import Image, ImageDraw

    from index_builder.build import build
    from index_builder.options import BuildOptions

    icon = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(icon).ellipse((8, 8, 56, 56), fill=(0, 0, 0, 255))
    icon.save(stack["coll"] / "icon.png")
    stack["s3"].upload_file(
        str(stack["coll"] / "icon.png"), stack["bucket"], f"{stack['prefix']}/collection/icon.png"
    )

    out = LocalStateMachine(stack["params"], stack["s3"]).run({"background": "black"})
    assert out["published"] is True and out["stats"]["count"] == 31
    v = read_version(stack["index"])
    assert v["manifest"]["image_preprocess"] == {"background": "#000000", "jpeg_draft": True}
    serial = tmp_path / "serial"
    build(
        BuildOptions(
            source=str(stack["coll"]),
            bundle=str(demo_bundle),
            out=str(serial),
            quiet=True,
            background=(0, 0, 0),
        )
    )
    expected = vectors_by_id(read_version(serial))
    np.testing.assert_allclose(vectors_by_id(v)["icon.png"], expected["icon.png"], atol=1e-6, rtol=0)

    again = LocalStateMachine(stack["params"], stack["s3"]).run({})
    assert again["stats"]["embedded"] == 31 and again["stats"]["unchanged"] == 0
    assert read_version(stack["index"])["manifest"]["image_preprocess"]["background"] == "#ffffff"


def test_plan_event_background_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from index_builder.lambda_job import RebuildFailed, build_argv
    from index_builder.sfn_handlers import plan_options

    env = {"SOURCE_URI": "s3://b/c", "MODEL_URI": "s3://b/m", "INDEX_URI": "s3://b/i"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert plan_options({"background": "#336699"}).background == (0x33, 0x66, 0x99)
    assert plan_options({"background": "none"}).background is None
    assert plan_options({}).background == (255, 255, 255)
    with pytest.raises(RebuildFailed, match="background"):
        plan_options({"background": "mauve"})
    assert build_argv({"background": "black"}, env)[-2:] == ["--background", "black"]
