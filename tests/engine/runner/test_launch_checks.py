"""Several processes (issue 19, item 9): the whole spec is checked once in the parent before any rank starts
(one sentence, exit 2, no run folder, no torch traceback), ``processes`` is capped by what the machine has, and a
rank that fails anyway is summed up by rank 0's error sentence while the launcher's report stays in the run
folder."""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.contract.protocol import Event
from engine.contract.runs import RunPaths, RunStore
from engine.runner import launch

sys.path.insert(0, str(Path(__file__).parents[1]))
from quant_helpers import make_tiny_model

ROOT = Path(__file__).resolve().parents[3]


def test_a_missing_data_file_with_three_processes_is_said_once_before_any_rank_starts(tmp_path):
    model = make_tiny_model(tmp_path / "tiny")
    missing = tmp_path / "nowhere" / "train.jsonl"
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: three\ndevice: cpu\nprocesses: 3\nstudent: {{source: {json.dumps(str(model))}}}\n"
                    f"data: {{preset: local, path: {json.dumps(str(missing))}}}\n"
                    "stages: [{kind: sft, name: s, model: student}]\n")
    home = tmp_path / "home"
    env = {**os.environ, "COMPRESSION_STUDIO_HOME": str(home), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop(launch.CHILD_ENV, None)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "engine", "run", str(spec)], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=240, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["type"] for e in events] == ["error"] and str(missing) in events[0]["data"]["message"]
    assert done.stderr.count(str(missing)) == 1  # the sentence once, not once per rank
    for noise in ("Traceback", "ChildFailedError", "launching"):  # no rank was ever started
        assert noise not in done.stderr
    assert not list(home.glob("runs/*"))
    assert elapsed < 90  # one check, not three ranks each loading torch and failing (40-80 s before)


def test_run_check_says_nothing_is_wrong_with_a_sound_spec(tmp_path):
    model = make_tiny_model(tmp_path / "tiny")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"say {i}", "response": f"{i}"}) + "\n" for i in range(20)))
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: ok\ndevice: cpu\nprocesses: 2\nstudent: {{source: {json.dumps(str(model))}}}\n"
                    f"data: {{preset: local, path: {json.dumps(str(data))}, test_fraction: 0.2}}\n"
                    "stages: [{kind: sft, name: s, model: student}]\n")
    env = {**os.environ, "COMPRESSION_STUDIO_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "engine", "run", "--check", str(spec)], cwd=ROOT, env=env,
                          text=True, capture_output=True, timeout=240, check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and done.stdout == "", done.stderr[-3000:]
    assert not list((tmp_path / "home").glob("runs/*"))


def _passed_check(monkeypatch):
    monkeypatch.setattr(launch.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))


@pytest.mark.parametrize("gpus, processes, expected", [
    (0, 4096, "processes: 4096 needs 4096 CPU cores, but this machine has"),
    (2, 4, "processes: 4 needs 4 GPUs, but this machine has 2; lower processes to 2 or set device: cpu."),
])
def test_processes_are_capped_by_what_the_machine_has(tmp_path, monkeypatch, gpus, processes, expected):
    _passed_check(monkeypatch)
    monkeypatch.setattr(launch, "visible_gpus", lambda: gpus)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: big\ndevice: auto\nprocesses: {processes}\nstages: [{{kind: sft, name: s}}]\n")
    store, out = RunStore(tmp_path / "home"), io.StringIO()
    assert launch.launch_distributed(spec, processes, store=store, out=out) == 2
    [error] = [Event.from_json(line) for line in out.getvalue().splitlines()]
    assert error.type == "error" and expected in error.data["message"]
    assert store.list() == []  # refused before a run folder exists


def test_a_rank_that_fails_is_one_sentence_and_the_launchers_report_stays_in_the_run(tmp_path, monkeypatch,
                                                                                    caplog):
    _passed_check(monkeypatch)
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: multi\ndevice: cpu\nprocesses: 2\nstages: [{kind: sft, name: s}]\n")
    store, out = RunStore(tmp_path / "home"), io.StringIO()
    sentence = "stage s ran out of memory; the cheapest change that lowers its peak is train.batch_size: 2"

    class Children:  # rank 0 reports and ends the run; torchrun's agent then writes its traceback to stderr
        def __init__(self, cmd, stderr, **kwargs):
            run_id = cmd[-1]
            lines = [Event("hello", {}, run_id=run_id, seq=1), Event("error", {"message": sentence}, run_id=run_id,
                     seq=2), Event("done", {"status": "failed", "summary": {}}, run_id=run_id, seq=3)]
            self.stdout = io.StringIO("".join(e.to_json() + "\n" for e in lines))
            stderr.write("Traceback (most recent call last):\ntorch.distributed.elastic.multiprocessing.errors."
                         "ChildFailedError: engine FAILED\n")
            self.pid = os.getpid()

        def wait(self):
            return 1

    monkeypatch.setattr(launch.subprocess, "Popen", Children)
    monkeypatch.setattr(launch, "_forward_cancel", lambda *args: None)
    with caplog.at_level(logging.ERROR, logger=launch.__name__):
        assert launch.launch_distributed(spec, 2, store=store, out=out) == 1
    assert [r.getMessage() for r in caplog.records] == [sentence]
    [record] = store.list()
    assert "ChildFailedError" in (RunPaths(record.path).root / launch.LAUNCHER_LOG).read_text()
    assert [Event.from_json(line).type for line in out.getvalue().splitlines()] == ["hello", "error", "done"]


def test_a_silent_rank_keeps_its_error_and_the_launcher_says_it(tmp_path, monkeypatch):
    """torchrun stops every rank when rank 1 fails, so rank 0 never says why: rank 1's sentence, kept in the run
    folder by its silent event writer, is what the launcher reports."""
    import threading

    from engine.contract.protocol import EventWriter

    store = RunStore(tmp_path / "home")
    paths = store.create("multi", "name: multi\n")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    events, _ = launch.attach_child(paths, EventWriter(paths.id, io.StringIO()), store, threading.Event())
    events.error("stage s ran out of memory (it asked for ≈2.1 GB more)")
    events.error("a later error is not the cause")
    assert launch.rank_error(paths.root) == "rank 1: stage s ran out of memory (it asked for ≈2.1 GB more)"

    monkeypatch.delenv("RANK")
    _passed_check(monkeypatch)
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: multi\ndevice: cpu\nprocesses: 2\nstages: [{kind: sft, name: s}]\n")
    out = io.StringIO()

    class Children:  # rank 0 starts the run; rank 1 fails and keeps its sentence; torchrun stops both
        def __init__(self, cmd, stderr, **kwargs):
            root = RunPaths(store.runs_dir / cmd[-1]).root
            (root / f"{launch.RANK_ERROR_PREFIX}1").write_text("stage s: the data file vanished")
            self.stdout = io.StringIO(Event("hello", {}, run_id=cmd[-1], seq=1).to_json() + "\n")
            self.pid = os.getpid()

        def wait(self):
            return 1

    monkeypatch.setattr(launch.subprocess, "Popen", Children)
    monkeypatch.setattr(launch, "_forward_cancel", lambda *args: None)
    assert launch.launch_distributed(spec, 2, store=store, out=out) == 1
    error = [Event.from_json(line) for line in out.getvalue().splitlines()][-2]
    assert error.type == "error" and "(rank 1: stage s: the data file vanished)" in error.data["message"]
