"""Never silent (issue 22): a run whose training step takes 12 s — a stand-in for a 4-bit GGUF teacher on a small
CPU — still writes an event at least every 10 s, and the heartbeats say what runs (which step, which
micro-batch of the gradient accumulation) and for how long. Asserted on the run's own events.jsonl times."""
from __future__ import annotations

import argparse
import json
import time

import pytest

SPEC = """name: slow-step
student: {source: "demo:student"}
data: {preset: demo, max_samples: 24, max_length: 64, test_fraction: 0, validation_fraction: 0}
stages:
  - kind: sft
    name: sft
    model: student
    train: {max_steps: 2, batch_size: 4, gradient_accumulation: 2, logging_steps: 1, save_steps: 1000}
"""
SLOW_S = 12.0

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_twelve_second_step_never_leaves_ten_seconds_without_an_event(tmp_path, monkeypatch, capsys):
    from engine.cli.run import cmd_run
    from engine.contract.runs import RunStore
    from engine.training.kd_trainer import ChunkedSFTTrainer

    monkeypatch.setattr("engine.cli.run.listen_for_cancel", lambda cancel: None)  # no stdin thread, no SIGINT hook
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "home"))
    real_step, calls = ChunkedSFTTrainer.training_step, []

    def slow_step(self, *args, **kwargs):  # the first micro-batch of the first step is the slow one
        calls.append(time.time())
        if len(calls) == 1:
            time.sleep(SLOW_S)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(ChunkedSFTTrainer, "training_step", slow_step)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    code = cmd_run(argparse.Namespace(resume=None, spec=str(spec)))
    out = capsys.readouterr().out
    assert code == 0, out[-2000:]
    run_id = json.loads(out.splitlines()[0])["run_id"]
    events = [json.loads(line) for line in (RunStore().paths(run_id).events).read_text().splitlines()]
    times = [e["time"] for e in events]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(calls) == 4 and max(gaps) <= 10.0, max(gaps)
    beats = [e["data"]["message"] for e in events if e["type"] == "status"
             and e["data"]["message"].startswith("training step 1/2, micro-batch 1/2 (")]
    assert len(beats) >= 2  # a 12 s micro-batch: at least two heartbeats name it, with its running time
    assert int(beats[-1].rsplit("(", 1)[1].split()[0]) >= 8
