"""The run store and the event writer under hostile input and faults (issue 14): run ids are ids, links never
lead out of a run, one writer per run, atomic files, a torn events line repaired, a damaged index rebuilt, a
damaged run.json listed as damaged, and a full disk that still ends with the run marked failed."""
from __future__ import annotations

import errno
import io
import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine.contract import runs as runs_module
from engine.contract.protocol import Event, EventWriter, read_events
from engine.contract.runs import (RunLock, RunLocked, RunNotFound, RunStore, StoreError, data_dir, is_run_id,
                                  read_inside, write_atomic)


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "home")


@pytest.mark.parametrize("bad", ["../..", "..", ".", "/etc", "/tmp/x", "runs/../..", "a/b", "", "x" * 300,
                                 "20260101-000000-a-abcd/../../..", "20260101-000000-a-abcd\n", "~root",
                                 "20260101-000000-A-ABCD"])
def test_anything_but_a_run_id_is_refused_by_every_store_command(store, bad):
    assert not is_run_id(bad)
    for command in (store.paths, store.get, store.delete, lambda i: store.update(i, status="failed")):
        with pytest.raises(RunNotFound, match="is not a run id"):
            command(bad)


def test_a_run_folder_that_is_a_link_is_not_a_run(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "run.json").write_text('{"id": "x"}')
    (outside / "keep.txt").write_text("precious")
    link = store.runs_dir / "20260101-000000-evil-abcd"
    link.symlink_to(outside, target_is_directory=True)
    with pytest.raises(RunNotFound, match="no run"):
        store.delete(link.name)
    assert (outside / "keep.txt").read_text() == "precious"
    assert [r.id for r in store.list()] == []


def test_links_inside_a_run_are_never_followed_out_of_it(store, tmp_path):
    paths = store.create("x", "name: x\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    paths.eval_md.symlink_to(secret)
    with pytest.raises(OSError) as info:
        read_inside(paths.eval_md)
    assert info.value.errno == errno.ELOOP
    (paths.root / "models").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(StoreError, match="leads out of the run folder"):
        paths.model("s")
    # events.jsonl replaced by a link to an outside file: the writer refuses to append through it
    victim = tmp_path / "victim.log"
    victim.write_text("untouched\n")
    paths.events.symlink_to(victim)
    with pytest.raises(OSError):
        EventWriter(paths.id, stream=io.StringIO(), mirror=paths.events)
    assert victim.read_text() == "untouched\n"
    # run.json's temporary file is created exclusively: a planted link at a guessable name is not written through
    store.update(paths.id, status="failed")
    assert store.get(paths.id).status == "failed" and secret.read_text() == "secret"
    store.delete(paths.id)
    assert secret.read_text() == "secret" and victim.read_text() == "untouched\n"


def test_a_damaged_run_json_lists_the_run_as_damaged(store):
    good = store.create("good", "")
    bad = store.create("bad", "")
    bad.info.write_bytes(b"\x00{not json")
    store.index_path.unlink()  # force the folders to be read
    listed = {r.id: r.status for r in RunStore(store.root).list()}
    assert listed == {good.id: "created", bad.id: "damaged"}
    with pytest.raises(StoreError, match=f"run {bad.id} is damaged"):
        store.get(bad.id)
    bad.info.write_text('{"id": 1}')
    with pytest.raises(StoreError, match="damaged"):
        store.get(bad.id)
    store.delete(bad.id)  # a damaged run can always be deleted
    assert not bad.root.exists()
    # damaged behind the index's back, a while after it was indexed: listed as damaged all the same
    assert [r.status for r in store.list()] == ["created"]
    good.info.write_text("{")
    later = os.stat(good.info).st_mtime + 10
    os.utime(good.info, (later, later))
    assert [r.status for r in store.list()] == ["damaged"]


@pytest.mark.parametrize("damage", ["garbage", "empty", "folder", "wrong-table"])
def test_a_damaged_or_missing_index_is_rebuilt_from_the_folders(tmp_path, damage):
    store = RunStore(tmp_path)
    paths = store.create("x", "")
    store.update(paths.id, status="finished", scores={"eval/rougeL": 0.5})
    store.index_path.unlink()
    if damage == "garbage":
        store.index_path.write_bytes(b"this is not a database" * 100)
    elif damage == "empty":
        store.index_path.write_bytes(b"")
    elif damage == "folder":
        store.index_path.mkdir()
    else:
        with sqlite3.connect(store.index_path) as db:
            db.execute("CREATE TABLE runs (x TEXT)")
    fresh = RunStore(tmp_path)
    [record] = fresh.list()
    assert record.id == paths.id and record.status == "finished" and record.scores == {"eval/rougeL": 0.5}
    fresh.update(paths.id, status="failed")
    assert fresh.get(paths.id).status == "failed"
    assert [r.status for r in RunStore(tmp_path).list()] == ["failed"]


def test_a_data_folder_that_is_a_file_is_a_sentence(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv(runs_module.HOME_ENV, str(home))
    with pytest.raises(StoreError, match="is a file, not a folder"):
        data_dir()
    with pytest.raises(StoreError):
        RunStore()


def test_one_writer_per_run_and_a_live_run_is_never_deleted(store, tmp_path):
    paths = store.create("x", "")
    script = ("import sys, time; from pathlib import Path; from engine.contract.runs import RunLock, RunPaths; "
              "RunLock(RunPaths(Path(sys.argv[1]))).acquire(); print('locked', flush=True); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    holder = subprocess.Popen([sys.executable, "-c", script, str(paths.root)], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
            RunLock(paths).acquire()
        assert RunLock.holder(paths) == holder.pid
        store.update(paths.id, status="running", pid=holder.pid)
        assert store.get(paths.id).is_alive()
        with pytest.raises(RunLocked, match=f"still running \\(pid {holder.pid}\\)"):
            store.delete(paths.id)
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the lock with the process: the run is resumable and deletable at once
    assert RunLock.holder(paths) is None and not store.get(paths.id).is_alive()
    with RunLock(paths):
        assert RunLock.holder(paths) == os.getpid()
    assert RunLock.holder(paths) is None
    store.delete(paths.id)


def test_a_reused_pid_does_not_make_a_dead_run_look_alive(store):
    paths = store.create("x", "")
    RunLock(paths).acquire().release()  # a run that had a lock file: the lock, not the pid, says alive
    store.update(paths.id, status="running", pid=os.getpid())  # some live process now has that pid
    assert not store.get(paths.id).is_alive()


def test_atomic_writes_keep_the_old_file_and_fall_back_in_place_when_the_disk_is_full(tmp_path, monkeypatch):
    target = tmp_path / "run.json"
    write_atomic(target, json.dumps({"status": "running", "pad": "x" * 40}))
    real_open = os.open

    def full_disk(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", full_disk)
    with pytest.raises(OSError):
        write_atomic(target, "{}")
    assert json.loads(target.read_text())["status"] == "running"  # never half a file
    write_atomic(target, json.dumps({"status": "failed"}), in_place_fallback=True)
    assert json.loads(target.read_text()) == {"status": "failed"}
    longer = {"status": "failed", "stage": "s" * 20, "pad": "x" * 10}  # longer indented, fits compacted
    write_atomic(target, json.dumps(longer, indent=2), in_place_fallback=True)
    assert json.loads(target.read_text()) == longer
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary left behind


def test_a_torn_last_line_is_cut_before_the_next_event(tmp_path):
    mirror = tmp_path / "events.jsonl"
    first = EventWriter("r", stream=io.StringIO(), mirror=mirror)
    first.log("one")
    first.close()
    with open(mirror, "a", encoding="utf-8") as f:
        f.write('{"v": 1, "type": "metric", "run_id": "r", "seq": 2, "da')  # killed mid-write
    second = EventWriter("r", stream=io.StringIO(), mirror=mirror, start_seq=1)
    second.emit("hello", pid=1)
    second.close()
    events = [e for _, e in read_events(mirror)]
    assert [(e.type, e.seq) for e in events] == [("log", 1), ("hello", 2)]


def test_events_and_summaries_always_serialize():
    out = io.StringIO()
    writer = EventWriter("r", stream=out)
    writer.metric("s", 1, {"train/loss": math.nan, "train/lr": math.inf, "ok": 1.0})
    writer.emit("done", status="failed", summary={"stages": {"s": {"scores": {"eval/loss": math.nan}}},
                                                  "nested": [math.inf, {"x": -math.inf}], 3: Path("/p")})
    writer.emit("sample", stage="s", step=1, prompt="p", completion="c", rewards={"r": math.nan})
    lines = out.getvalue().splitlines()
    events = [Event.from_json(line) for line in lines]
    assert all("NaN" not in line and "Infinity" not in line for line in lines)
    assert events[0].data["values"] == {"train/loss": None, "train/lr": None, "ok": 1.0}
    assert events[1].data["summary"]["stages"]["s"]["scores"]["eval/loss"] is None
    assert events[1].data["summary"]["nested"] == [None, {"x": None}] and events[1].data["summary"]["3"] == "/p"
    assert events[2].data["rewards"] == {"r": None}


def test_nan_scores_never_make_run_json_invalid(store):
    paths = store.create("x", "")
    store.update(paths.id, scores={"eval/loss": math.nan, "eval/rougeL": 0.5})
    info = json.loads(paths.info.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in run.json"))
    assert info["scores"] == {"eval/loss": None, "eval/rougeL": 0.5}
    paths.merge_eval({"models": {"a": {"loss": math.inf}}})
    json.loads(paths.eval_json.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in eval.json"))


def test_a_full_disk_mid_run_ends_in_an_error_event_and_a_failed_run(store, monkeypatch):
    """Fault injection: the stage, the events mirror and new files all fail with ENOSPC; the pipeline still
    says one sentence, marks the run failed and sends `done` — no exception escapes its error handler."""
    import threading
    import types

    from engine.runner import pipeline
    from engine.contract.spec import RunSpec, build

    paths = store.create("x", "name: x\n")
    store.update(paths.id, status="running")
    out = io.StringIO()
    events = EventWriter(paths.id, stream=out, mirror=paths.events)

    def run_stage(ctx):
        real_open = os.open

        def full(path, flags, *args):
            if flags & os.O_CREAT:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real_open(path, flags, *args)

        monkeypatch.setattr(os, "open", full)  # from here on no new file fits
        events._mirror_file.write = lambda text: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left"))
        raise OSError(errno.ENOSPC, "No space left on device", str(ctx.paths.checkpoints("s")))

    monkeypatch.setattr(pipeline, "recipe_for", lambda kind: types.SimpleNamespace(run_stage=run_stage))
    spec = build(RunSpec, {"name": "x", "stages": [{"kind": "sft", "name": "s"}]})
    status = pipeline.run_pipeline(spec, paths, events, store, threading.Event(), "cpu")
    monkeypatch.undo()
    assert status == "failed"
    sent = [Event.from_json(line) for line in out.getvalue().splitlines()]
    assert [e.type for e in sent][-2:] == ["error", "done"]
    assert "the disk is full" in sent[-2].data["message"] and f"--resume {paths.id}" in sent[-2].data["message"]
    assert store.get(paths.id).status == "failed"  # written in place: never left "running"


def test_an_index_that_is_a_link_is_set_aside_not_written_through(tmp_path):
    outside = tmp_path / "outside.db"
    outside.write_bytes(b"precious")
    home = tmp_path / "home"
    home.mkdir()
    (home / "runs.sqlite").symlink_to(outside)
    store = RunStore(home)
    paths = store.create("x", "")
    assert [r.id for r in store.list()] == [paths.id]
    assert outside.read_bytes() == b"precious" and not store.index_path.is_symlink()


def test_a_multi_process_run_is_locked_by_its_launcher_alone(tmp_path, monkeypatch):
    """accelerate launch: the launcher holds the run's lock for its children (which never take it), and lets
    it go when they are done."""
    from engine.runner import launch
    from engine.contract.runs import RunPaths

    spec = tmp_path / "spec.yaml"
    spec.write_text("name: multi\ndevice: cpu\nprocesses: 2\nstages:\n  - {kind: sft, name: s}\n")
    store, out, seen = RunStore(tmp_path / "home"), io.StringIO(), {}

    class Children:
        def __init__(self, cmd, env, **kwargs):
            paths = RunPaths(store.runs_dir / cmd[-1])
            seen["holder"], seen["child_env"] = RunLock.holder(paths), env.get(launch.CHILD_ENV)
            with pytest.raises(RunLocked):  # a second engine on this run is refused meanwhile
                RunLock(paths).acquire()
            done = Event("done", {"status": "finished", "summary": {}}, run_id=paths.id, seq=2).to_json()
            hello = Event("hello", {}, run_id=paths.id, seq=1).to_json()
            self.stdout, self.pid = io.StringIO(f"{hello}\n{done}\n"), os.getpid()

        def wait(self):
            return 0

    monkeypatch.setattr(launch, "check_before_launch", lambda *args: 0)  # the pre-launch check: its own test
    monkeypatch.setattr(launch.subprocess, "Popen", Children)
    monkeypatch.setattr(launch, "_forward_cancel", lambda *args: None)
    assert launch.launch_distributed(spec, 2, store=store, out=out) == 0
    assert seen == {"holder": os.getpid(), "child_env": "1"}
    [record] = store.list()
    assert RunLock.holder(RunPaths(record.path)) is None  # released once the children finished
