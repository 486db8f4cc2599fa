"""Scale-out through ``accelerate launch``: a tiny token-level KD run (and a two-record evaluation, which runs on
rank 0 only) under two CPU processes (gloo) gives one event stream of the usual kinds and one loadable model;
plus the launcher's pieces (command line, relay, cancel file, rank-aware helpers) without starting processes."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.core import ranks
from engine.runner import launch
from engine.contract.protocol import Event, EventWriter, read_events
from engine.contract.runs import RunStore

ROOT = Path(__file__).resolve().parents[2]
SPEC = """\
name: two-processes
device: cpu
processes: 2
data: {preset: demo, max_samples: 64, max_length: 64, validation_fraction: 0.0, test_fraction: 0.1}
stages:
  - kind: distill
    name: kd
    model: student
    teacher: teacher
    distill: {alpha: 0.5}
    train: {max_steps: 4, batch_size: 4, logging_steps: 1, save_steps: 100}
  - kind: evaluate
    name: eval
    models: {teacher: teacher, student: kd}
    reference: teacher
    max_eval_samples: 2
    generation: {max_new_tokens: 4, batch_size: 2}
"""


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """Run the spec once for the module (about 35 s on 2 cores); returns (exit code, stdout lines, home)."""
    home = tmp_path_factory.mktemp("home")
    spec = home / "spec.yaml"
    spec.write_text(SPEC)
    env = {**os.environ, "COMPRESSION_STUDIO_HOME": str(home)}
    env.pop(launch.CHILD_ENV, None)
    result = subprocess.run([sys.executable, "-m", "engine", "run", str(spec)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    return result.returncode, result.stdout.splitlines(), home, result.stderr


def test_two_processes_give_one_event_stream(two_process_run):
    code, lines, home, stderr = two_process_run
    assert code == 0, stderr[-3000:]
    events = [Event.from_json(line) for line in lines]  # stdout holds nothing but events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({e.run_id for e in events}) == 1
    kinds = [e.type for e in events]
    assert kinds[0] == "hello" and kinds.count("hello") == 1
    assert kinds[-1] == "done" and kinds.count("done") == 1 and events[-1].data["status"] == "finished"
    assert {"status", "progress", "metric", "artifact", "sample"} <= set(kinds)
    evaluated = [e.data["model"] for e in events if e.type == "metric" and e.data["stage"] == "eval"
                 and "eval/rougeL" in e.data["values"]]  # the scores, not the size metrics sent before them
    assert evaluated == ["teacher", "student"]  # evaluation ran once, not once per rank
    steps = [e.data["step"] for e in events if e.type == "metric" and "train/loss" in e.data["values"]]
    assert steps == [1, 2, 3, 4]  # one rank's metrics, not two interleaved copies
    mirror = [e.to_json() for _, e in read_events(home / "runs" / events[0].run_id / "events.jsonl")]
    assert mirror == [e.to_json() for e in events]
    runs = RunStore(home).list()
    assert [r.id for r in runs] == [events[0].run_id] and runs[0].status == "finished"


def test_two_process_loss_is_the_joint_kd_loss(two_process_run):
    """Under DDP the logged loss must still be α·CE + (1−α)·D (token counts averaged across ranks, not halved)."""
    _, lines, _, _ = two_process_run
    for event in map(Event.from_json, lines):
        values = event.data.get("values", {}) if event.type == "metric" else {}
        if "train/loss" in values and "kd/ce" in values:
            joint = 0.5 * values["kd/ce"] + 0.5 * values["kd/divergence"]
            assert values["train/loss"] == pytest.approx(joint, rel=0.25)


def test_two_processes_save_one_loadable_model(two_process_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import torch

    _, lines, home, _ = two_process_run
    artifacts = [Event.from_json(line) for line in lines if '"artifact"' in line]
    kinds = [a.data["kind"] for a in artifacts]  # the model, then the evaluation (its file, written as it fills)
    assert kinds[0] == "model" and kinds.count("model") == 1 and set(kinds[1:]) == {"eval"}
    report = json.loads(Path(artifacts[-1].data["path"]).read_text())
    assert set(report["models"]) == {"teacher", "student"}
    folder = Path(artifacts[0].data["path"])
    assert folder.parent == home / "runs" / artifacts[0].run_id / "models"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["kd"]  # no .partial left by a second rank
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("Instruction: add 2 and 3", return_tensors="pt").input_ids  # [1, L]
    with torch.no_grad():
        logits = model(ids).logits  # [1, L, V]
    assert logits.shape[:2] == ids.shape and torch.isfinite(logits).all()
    assert not (folder.parent.parent / launch.CANCEL_FILE).exists()


def test_accelerate_command_per_strategy():
    ddp = launch.accelerate_command("RUN", 2, "ddp", port=29555)
    assert ddp[1:3] == ["-m", "accelerate.commands.launch"]
    assert ddp[ddp.index("--num_processes") + 1] == "2" and "--multi_gpu" in ddp
    assert ddp[-5:] == ["--module", "engine", "run", "--resume", "RUN"]
    assert "--use_fsdp" in launch.accelerate_command("RUN", 4, "fsdp", port=1)
    assert "--use_deepspeed" in launch.accelerate_command("RUN", 4, "deepspeed", port=1)
    custom = launch.accelerate_command("RUN", 8, "config:/etc/acc.yaml", port=1)
    assert custom[custom.index("--config_file") + 1] == "/etc/acc.yaml" and "--multi_gpu" not in custom


def test_strategy_from_spec_or_environment(monkeypatch):
    monkeypatch.delenv(launch.STRATEGY_ENV, raising=False)
    assert launch.strategy_of(None) == "ddp"
    monkeypatch.setenv(launch.STRATEGY_ENV, "fsdp")
    assert launch.strategy_of(object()) == "fsdp"
    assert launch.strategy_of(type("Spec", (), {"distributed": "deepspeed"})()) == "deepspeed"
    monkeypatch.setenv(launch.STRATEGY_ENV, "horovod")
    with pytest.raises(ValueError, match="horovod"):
        launch.strategy_of(None)


def test_relay_passes_events_once_and_noise_to_stderr(capsys):
    out = io.StringIO()
    relay = launch._Relay(out)
    refusal = EventWriter(stream=io.StringIO()).error("no such model").to_json()
    writer = EventWriter("RUN", io.StringIO())
    stream = [refusal, refusal, "{'loss': 1.0}", writer.emit("hello").to_json(),
              writer.emit("done", status="cancelled").to_json()]
    for line in stream:
        relay.line(line + "\n")
    relayed = out.getvalue().splitlines()
    assert relayed == [refusal, stream[3], stream[4]]
    assert "{'loss': 1.0}" in capsys.readouterr().err
    assert relay.hello and relay.final == "cancelled" and relay.last_seq == 2


def test_cancel_file_sets_the_event(tmp_path):
    cancel = threading.Event()
    launch._watch_cancel_file(tmp_path / launch.CANCEL_FILE, cancel, interval_s=0.02)
    time.sleep(0.1)
    assert not cancel.is_set()
    (tmp_path / launch.CANCEL_FILE).touch()
    assert cancel.wait(2.0)


def test_rank_helpers_outside_a_process_group(monkeypatch, tmp_path):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not ranks.is_main_process()
    assert ranks.any_rank(True) and not ranks.any_rank(False)  # no process group: the local flag
    assert ranks.run_stage_on_ranks("evaluate", lambda: "ran") is None
    assert ranks.run_stage_on_ranks("distill", lambda: "ran") == "ran"
    store = RunStore(tmp_path)
    paths = store.create("r", "name: r\n")
    events, follower = launch.attach_child(paths, EventWriter(paths.id, io.StringIO(), mirror=paths.events),
                                           store, threading.Event())
    events.emit("hello")
    follower.update(paths.id, status="running")
    assert paths.events.read_text() == "" and store.get(paths.id).status == "created"
    monkeypatch.setenv("RANK", "0")
    assert ranks.run_stage_on_ranks("evaluate", lambda: "ran") == "ran"


def test_more_processes_than_gpus_is_refused_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "visible_gpus", lambda: 1)
    monkeypatch.setattr(launch.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("device: cpu", "device: auto"))
    store, out = RunStore(tmp_path / "home"), io.StringIO()
    assert launch.launch_distributed(spec, 2, store=store, out=out) == 2
    error = Event.from_json(out.getvalue().splitlines()[0])
    assert error.type == "error" and "needs 2 GPUs, but this machine has 1" in error.data["message"]
    assert store.list() == []  # the run folder the parent made is gone again
