"""Finite or failed, and resumable (issue 14): a non-finite loss or weight stops the stage with "diverged at step
N", only complete checkpoints are resumed from, and a sweep treats one diverging rate as a result."""
from __future__ import annotations

import io
import math
import types

import pytest
import torch

from engine.training.callbacks import (COMPLETE_MARKER, EventsCallback, drop_incomplete_checkpoints, last_checkpoint,
                              nonfinite_parameter)
from engine.core.context import Diverged, RunContext
from engine.contract.protocol import EventWriter
from engine.contract.runs import RunStore
from engine.contract.spec import RunSpec, build
from engine.training.support import train_with_sweep


def _checkpoint(folder, step, *, marked=False, state=True):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"w")
    if state:
        (path / "trainer_state.json").write_text("{}")
    if marked:
        (path / COMPLETE_MARKER).write_text(f"{step}\n")
    return path


def test_resume_uses_the_newest_complete_checkpoint(tmp_path):
    _checkpoint(tmp_path, 10, marked=True)
    _checkpoint(tmp_path, 20, marked=True)
    _checkpoint(tmp_path, 30)  # killed mid-save: the trainer state exists, the marker does not
    _checkpoint(tmp_path, 100, state=False)
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path).endswith("checkpoint-20")  # numeric order, not text order
    assert sorted(drop_incomplete_checkpoints(tmp_path)) == ["checkpoint-100", "checkpoint-30"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-20", "checkpoint-x"]
    assert last_checkpoint(tmp_path / "none") is None


def test_checkpoints_from_before_the_marker_count_when_their_trainer_state_was_written(tmp_path):
    _checkpoint(tmp_path, 5)
    _checkpoint(tmp_path, 9, state=False)  # the save that crashed
    assert last_checkpoint(tmp_path).endswith("checkpoint-5")


def _ctx(tmp_path, spec_values=None) -> RunContext:
    spec = build(RunSpec, spec_values or {"stages": [{"kind": "sft", "name": "s"}]})
    paths = RunStore(tmp_path / "home").create("x", "")
    return RunContext(spec=spec, stage=spec.stages[0], paths=paths, events=EventWriter(stream=io.StringIO()))


def _state(step):
    return types.SimpleNamespace(global_step=step, max_steps=10, num_input_tokens_seen=0)


def test_a_non_finite_loss_stops_the_stage_naming_the_step(tmp_path):
    callback = EventsCallback(_ctx(tmp_path))
    args = types.SimpleNamespace(learning_rate=0.5, output_dir=str(tmp_path))
    callback.on_log(args, _state(3), None, logs={"loss": 2.0})
    for bad in (math.nan, math.inf):
        with pytest.raises(Diverged, match=r"s diverged at step 7: the training loss is (nan|inf); lower "
                                           r"train.learning_rate \(now 0.5\)"):
            callback.on_log(args, _state(7), None, logs={"loss": bad})


def test_a_checkpoint_with_non_finite_weights_is_never_marked_or_kept(tmp_path):
    callback = EventsCallback(_ctx(tmp_path))
    args = types.SimpleNamespace(learning_rate=0.5, output_dir=str(tmp_path))
    model = torch.nn.Linear(3, 2)
    good = _checkpoint(tmp_path, 2)
    callback.on_save(args, _state(2), None, model=model)
    assert (good / COMPLETE_MARKER).read_text() == "2\n"
    with torch.no_grad():
        model.weight[0, 1] = math.nan
    assert nonfinite_parameter(model) == "weight"
    bad = _checkpoint(tmp_path, 4)
    with pytest.raises(Diverged, match="diverged by step 4: weight weight is not finite"):
        callback.on_save(args, _state(4), None, model=model)
    assert not bad.exists() and last_checkpoint(tmp_path) == str(good)


def test_a_sweep_keeps_going_past_a_diverging_rate_and_fails_only_if_all_do(tmp_path):
    ctx = _ctx(tmp_path, {"stages": [{"kind": "sft", "name": "s", "train": {"sweep_learning_rates": [0.5, 1e-3]}}]})

    def fit(lr, folder):
        if lr == 0.5:
            raise Diverged("s diverged at step 3: the training loss is nan")
        trainer = types.SimpleNamespace(eval_dataset=[1], evaluate=lambda: {"eval_loss": 1.25})
        return trainer, f"model@{lr}"

    model, summary = train_with_sweep(ctx, ctx.stage.train, fit)
    assert model == "model@0.001" and summary["best_learning_rate"] == 1e-3
    assert summary["sweep"][0] == {"learning_rate": 0.5, "eval_loss": None, "diverged": True}
    # each point that finished has its own scores among the stage's; the diverged one has none
    assert summary["lr-0.001/eval_loss"] == summary["sweep"][1]["eval_loss"] and "lr-0.5/eval_loss" not in summary

    def always(lr, folder):
        raise Diverged("nan")

    with pytest.raises(Diverged, match="every learning rate of the sweep diverged"):
        train_with_sweep(ctx, ctx.stage.train, always)


def test_a_sweep_tags_each_rates_metrics_and_progress_and_forgets_the_tag_after(tmp_path):
    """Each rate's curves restart at step 1: the events say which rate they belong to (the studio draws one
    series per rate and counts every rate in the run's progress)."""
    ctx = _ctx(tmp_path, {"stages": [{"kind": "sft", "name": "s", "train": {"sweep_learning_rates": [5e-4, 2e-3]}}]})
    events = []
    ctx.events.listeners.append(events.append)
    callback = EventsCallback(ctx, progress_interval_s=0.0)

    def fit(lr, folder):
        callback.on_step_end(types.SimpleNamespace(), _state(1),
                            types.SimpleNamespace(should_save=False, should_evaluate=False))
        callback.on_log(types.SimpleNamespace(learning_rate=lr), _state(1), None, logs={"loss": 2.0})
        trainer = types.SimpleNamespace(eval_dataset=[1], evaluate=lambda: {"eval_loss": 1.0 + lr})
        return trainer, f"model@{lr}"

    train_with_sweep(ctx, ctx.stage.train, fit)
    tagged = [(e.type, e.data.get("sweep")) for e in events if e.type in ("metric", "progress")]
    assert tagged[:2] == [("progress", {"index": 0, "count": 2, "learning_rate": 5e-4}),
                          ("metric", {"index": 0, "count": 2, "learning_rate": 5e-4})]
    assert ("metric", {"index": 1, "count": 2, "learning_rate": 2e-3}) in tagged
    summary = [e.data for e in events if e.type == "metric" and "sweep/learning_rate" in e.data["values"]]
    assert [d["values"]["sweep/learning_rate"] for d in summary] == [5e-4, 2e-3] and "sweep" not in summary[0]
    assert ctx.sweep is None
