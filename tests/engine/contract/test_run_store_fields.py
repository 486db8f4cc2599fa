"""The run store checks its own files (issue #19, item 5): every field of run.json, of an index row and of an
events.jsonl line corrupted one at a time, and special files (a FIFO, a folder) put where a run file should be.

What must hold: ``runs`` never breaks and never shows an index row over run.json; a damaged run.json makes its
run "damaged" (a sentence on get); a bad event line is skipped with a warning and the sequence continues after
the last good one; nothing blocks on a FIFO."""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.cli.run import _last_seq
from engine.cli.tools import cmd_runs
from engine.contract.protocol import EventWriter, read_events
from engine.contract.run_files import RunLock
from engine.contract.run_status import STORED_STATES
from engine.contract.runs import RunStore, StoreError

REPO = Path(__file__).resolve().parents[3]
BAD_VALUES = {"none": None, "text": "abc", "number": 5, "negative": -1, "list": [1], "object": {"a": 1},
              "bool": True, "huge": 10 ** 400, "float-huge": 1e300, "surrogate": "\ud800", "long": "x" * 10_000}
RUN_FIELDS = ("name", "status", "stage", "created", "updated", "pid", "scores")


def _within(seconds: float, work, *args):
    """``work(*args)`` run on a thread that must finish in time (a FIFO opened for reading would block)."""
    result: dict = {}

    def go():
        try:
            result["value"] = work(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{work.__name__} blocked"
    if "error" in result:
        raise result["error"]
    return result.get("value")


@pytest.fixture
def run(tmp_path):
    store = RunStore(tmp_path / "home")
    paths = store.create("r", "name: r\n")
    store.update(paths.id, status="failed", scores={"eval/rougeL": 0.5})
    return store, paths


def _listed(store: RunStore) -> list:
    records = store.list()
    for record in records:  # what `runs` and the studio read from a record
        assert record.status in (*STORED_STATES, "damaged") and isinstance(record.created, float)
        assert all(isinstance(k, str) and isinstance(v, float) for k, v in record.scores.items())
    return records


@pytest.mark.parametrize("field", RUN_FIELDS)
@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
def test_run_json_field_by_field(run, field, bad, capsys, monkeypatch):
    store, paths = run
    info = json.loads(paths.info.read_text())
    info[field] = BAD_VALUES[bad]
    paths.info.write_text(json.dumps(info))
    later = time.time() + 30
    os.utime(paths.info, (later, later))  # edited after it was indexed
    [record] = _listed(store)
    try:
        got = store.get(paths.id)
    except StoreError as exc:
        assert record.status == "damaged" and str(exc).startswith(f"run {paths.id} is damaged: its run.json")
        assert len(str(exc)) < 300  # the 10,000-character value is cut
    else:  # a usable record: the field was optional (scores dropped, stage empty) and the rest is run.json's
        assert got.status == record.status == "failed" and got.name == record.name
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(store.root))
    assert cmd_runs(argparse.Namespace(action="list", run_id=None)) == 0
    assert paths.id in capsys.readouterr().out


INDEX_BAD = {"text": "abc", "blob": b"\x00\xff", "null": None, "huge": 1e300, "negative": -5, "number": 5}


# name and stage are TEXT columns: SQLite turns a number put there into text, a valid-looking name; the others
# keep what they were given
INDEX_CASES = [(column, bad) for column in RUN_FIELDS for bad in sorted(INDEX_BAD)
               if column not in ("name", "stage") or bad in ("blob", "null")]


@pytest.mark.parametrize(("column", "bad"), INDEX_CASES)
def test_index_row_field_by_field_never_overrides_run_json(run, column, bad):
    store, paths = run
    store.list()  # indexed
    with sqlite3.connect(store.index_path) as db:
        db.execute(f"UPDATE runs SET {column} = ?", (INDEX_BAD[bad],))
    db.close()
    [record] = _listed(store)
    assert (record.name, record.status, record.scores) == ("r", "failed", {"eval/rougeL": 0.5})


def test_an_index_row_from_the_future_never_overrides_run_json(run, capsys):
    store, paths = run
    store.list()
    with sqlite3.connect(store.index_path) as db:
        db.execute("UPDATE runs SET status = 'finished', updated = ?, scores = '{\"x\": 1.0}'",
                   (time.time() + 10 ** 6,))
    db.close()
    [record] = _listed(store)
    assert (record.status, record.scores) == ("failed", {"eval/rougeL": 0.5})
    store.update(paths.id, stage="s")  # the next write puts the truth back into the index
    assert store.list()[0].status == "failed"


EVENT_DAMAGE = {
    "seq-text": {"seq": "abc"}, "seq-huge": {"seq": 10 ** 400}, "seq-negative": {"seq": -1},
    "seq-float": {"seq": 2.5}, "seq-bool": {"seq": True}, "seq-past-int64": {"seq": 2 ** 70},
    "time-text": {"time": "noon"}, "time-future": {"time": 1e300}, "time-null": {"time": None},
    "type-number": {"type": 5}, "type-unknown": {"type": "explode"}, "data-list": {"data": [1]},
    "v-text": {"v": "one"}, "run-id-number": {"run_id": 7},
}


@pytest.mark.parametrize("damage", sorted(EVENT_DAMAGE))
def test_events_line_by_line_a_bad_line_is_skipped_and_the_sequence_continues(tmp_path, damage, caplog):
    path = tmp_path / "events.jsonl"
    writer = EventWriter("r", stream=open(os.devnull, "w"), mirror=path)  # closed with the process
    writer.log("one")
    writer.log("two")
    writer.close()
    good = json.loads(path.read_text().splitlines()[-1])
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({**good, "seq": 99, **EVENT_DAMAGE[damage]}) + "\n")
        f.write('{"v": 1, "type": "log", "seq": 1' + "0" * 5000 + ', "time": 1.0, "data": {}}\n')
    with open(path, "ab") as f:
        f.write(b'{"v": 1, "type": "log", "seq": 7, "time": 1.0, "data": {"m": "\xff"}}\n')
    with caplog.at_level(logging.WARNING):
        events = [e for _, e in read_events(path)]
    assert [e.data["message"] for e in events] == ["one", "two"]
    assert "skipped 3 unreadable event line(s)" in caplog.text and len(caplog.text) < 2000
    assert _last_seq(path) == 2
    resumed = EventWriter("r", stream=open(os.devnull, "w"), mirror=path,  # as above
                          start_seq=_last_seq(path))
    resumed.log("three")
    resumed.close()
    assert [e.seq for _, e in read_events(path)] == [1, 2, 3]


def _special(path: Path, kind: str) -> None:
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_special_files_in_place_of_run_files_are_refused_without_blocking(run, kind):
    store, paths = run
    _special(paths.events, kind)
    with pytest.raises(OSError, match="stands where a file should be"):
        _within(5, lambda: list(read_events(paths.events)))
    with pytest.raises(OSError):
        _within(5, _last_seq, paths.events)  # never silently restarted at seq 0
    _special(paths.lock, kind)
    assert _within(5, RunLock.holder, paths) is None
    with pytest.raises(StoreError, match="is not a regular file"):
        _within(5, RunLock(paths).acquire)
    _special(paths.eval_md, kind)
    with pytest.raises(OSError):
        _within(5, paths.add_stage_report, "models", "s", {"a": 1}, "| a |\n")
    _special(paths.info, kind)
    with pytest.raises(StoreError, match="is damaged"):
        _within(5, store.get, paths.id)
    assert [r.status for r in _within(5, store.list)] == ["damaged"]


@pytest.mark.parametrize("name", ["events.jsonl", "lock", "spec.yaml", "eval.md", "engine.log"])
def test_resume_refuses_a_fifo_in_place_of_a_run_file(run, name):
    store, paths = run
    _special(paths.root / name, "fifo")
    env = {**os.environ, "COMPRESSION_STUDIO_HOME": str(store.root), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "engine", "run", "--resume", paths.id], capture_output=True,
                          text=True, env=env, timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"{name} is not a regular file" in done.stderr and done.stderr.count("\n") == 1
    assert [json.loads(line)["type"] for line in done.stdout.splitlines()] == ["error"]


def test_a_fifo_in_place_of_engine_log_never_blocks_the_diverted_stream(tmp_path):
    from engine.contract.streams import SurvivingStream

    os.mkfifo(tmp_path / "engine.log")
    read_end, write_end = os.pipe()
    stream = SurvivingStream(os.fdopen(write_end, "w", buffering=1), fallback=tmp_path / "engine.log")
    os.close(read_end)  # the studio went away: the stream diverts to engine.log, a FIFO nobody reads
    _within(5, stream.write, "after the reader left\n")
    assert stream.diverted  # to /dev/null instead; the run goes on


def test_an_overlong_event_line_is_skipped_without_being_held(tmp_path, monkeypatch):
    from engine.contract import protocol

    monkeypatch.setattr(protocol, "MAX_EVENT_LINE", 1000)
    path = tmp_path / "events.jsonl"
    writer = EventWriter("r", stream=io.StringIO(), mirror=path)
    writer.log("one")
    writer.close()
    with open(path, "ab") as f:
        f.write(b"x" * 5000 + b"\n")
    writer = EventWriter("r", stream=io.StringIO(), mirror=path, start_seq=1)
    writer.log("two")
    writer.close()
    got = list(read_events(path))
    assert [e.data["message"] for _, e in got] == ["one", "two"] and got[-1][0] == path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"y" * 5000)  # a giant line still being written: left for the next read
    assert [e.data["message"] for _, e in read_events(path, got[-1][0])] == []


def test_a_checkpoint_holding_a_fifo_is_never_the_resume_point(tmp_path):
    from engine.contract.run_status import complete_checkpoints, has_resume_point

    stage = tmp_path / "checkpoints" / "sft"
    for step in (10, 20):
        folder = stage / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text("{}")
        (folder / "complete").write_text("")
    (stage / "checkpoint-20" / "trainer_state.json").unlink()
    os.mkfifo(stage / "checkpoint-20" / "trainer_state.json")  # transformers would wait on it forever
    assert _within(5, complete_checkpoints, stage) == [stage / "checkpoint-10"]
    os.unlink(stage / "checkpoint-10" / "complete")
    os.mkfifo(stage / "checkpoint-10" / "complete")
    assert _within(5, has_resume_point, tmp_path) is False


EVAL_DAMAGE = {"huge": '{"models": {"a": 1' + "0" * 5000 + "}}", "deep": "[" * 50_000 + "]" * 50_000,
               "nan": '{"models": NaN}', "list": "[1, 2]", "bytes": b'{"models": "\xff"}', "torn": '{"models": {'}


@pytest.mark.parametrize("damage", sorted(EVAL_DAMAGE))
def test_eval_json_and_a_stage_marker_damaged_are_started_afresh_or_run_again(run, damage):
    from engine.contract.run_status import STAGE_DONE_FILE
    from engine.runner.pipeline import _read_marker
    from studio.model.history_data import read_eval

    store, paths = run
    text = EVAL_DAMAGE[damage]
    raw = text if isinstance(text, bytes) else text.encode()
    paths.eval_json.write_bytes(raw)
    assert read_eval(store.get(paths.id)) is None  # the history shows no report, not a crash
    assert paths.merge_eval({"quantization": {"q": 1}}) == {"quantization": {"q": 1}}  # started afresh
    marker = paths.stage_dir("s") / STAGE_DONE_FILE
    marker.parent.mkdir(parents=True)
    marker.write_bytes(raw)
    out = io.StringIO()
    assert _read_marker(marker, EventWriter("r", out)) is None  # the stage runs again
    assert "is damaged" in out.getvalue() and "running that stage again" in out.getvalue()


def test_a_run_that_cannot_be_stored_is_not_created(tmp_path):
    store = RunStore(tmp_path / "home")
    with pytest.raises(StoreError, match="holds a character that is not text"):
        store.create("x\ud800", "name: x\n")
    assert list(store.runs_dir.iterdir()) == [] and store.list() == []
