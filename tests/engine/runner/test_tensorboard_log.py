"""TensorBoard files from the event stream: metric events become scalars under the protocol's names (one folder
per stage, per evaluated model), samples become text, and TensorBoard's own reader gets back the same numbers."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from engine.contract.protocol import EventWriter
from engine.contract.spec import RunSpec, SFTStage, SpecError
from engine.runner.tensorboard_log import attach


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_metric_and_sample_events_land_in_tensorboard(tmp_path: Path) -> None:
    events = EventWriter("run", stream=io.StringIO())
    board = attach(events, tmp_path / "tensorboard")
    assert board is not None
    events.metric("student_kd", 5, {"train/loss": 2.5, "kd/ce": 1.25, "kd/divergence": 0.5, "train/lr": 1e-4})
    events.metric("student_kd", 10, {"train/loss": 2.0, "kd/ce": 1.0, "kd/divergence": float("nan")})
    events.metric("grpo", 1, {"grpo/reward/answer_correct": 0.25, "grpo/kl": 0.01})
    events.emit("metric", stage="eval", step=0, model="kd_student", values={"eval/rougeL": 0.483})
    events.emit("sample", stage="grpo", step=1, prompt="2+2?", completion="<answer>4</answer>",
                rewards={"answer_correct": 1.0})
    events.status("finished")
    board.close()

    kd = _scalars(tmp_path / "tensorboard" / "student_kd")
    assert kd["train/loss"] == [(5, 2.5), (10, 2.0)]
    assert kd["kd/ce"] == [(5, 1.25), (10, 1.0)] and kd["kd/divergence"] == [(5, 0.5)]  # NaN (sent as null) skipped
    assert kd["train/lr"] == [(5, pytest.approx(1e-4))]
    grpo = _scalars(tmp_path / "tensorboard" / "grpo")
    assert grpo == {"grpo/reward/answer_correct": [(1, 0.25)], "grpo/kl": [(1, pytest.approx(0.01))]}
    assert _scalars(tmp_path / "tensorboard" / "eval" / "kd_student") == {"eval/rougeL": [(0, pytest.approx(0.483))]}

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard" / "grpo"))
    acc.Reload()
    assert "samples/text_summary" in acc.Tags()["tensors"]


def test_report_to_names_known_trackers() -> None:
    stage = SFTStage()
    assert RunSpec(stages=[stage], report_to=["tensorboard", "wandb"]).report_to == ["tensorboard", "wandb"]
    assert RunSpec(stages=[stage], report_to="none").report_to == []
    with pytest.raises(SpecError, match="report_to: 'tensorbored' is not one of tensorboard, wandb"):
        RunSpec(stages=[stage], report_to=["tensorbored"])


def test_report_to_reaches_the_trainer_without_a_second_tensorboard(tmp_path: Path) -> None:
    """The Trainer gets the extra trackers; TensorBoard is already written from the events, so not twice."""
    from engine.core.context import RunContext
    from engine.training.support import training_arguments

    for report_to, expected in ((["tensorboard"], []), (["wandb", "tensorboard"], ["wandb"])):
        spec = RunSpec(name="r", stages=[SFTStage(name="s")], report_to=report_to, device="cpu")
        ctx = RunContext(spec=spec, stage=spec.stages[0], paths=None,
                         events=EventWriter("t", stream=io.StringIO()), device="cpu")
        args = training_arguments(ctx, spec.stages[0].train, 1e-3, tmp_path)
        assert args.report_to == expected and args.run_name == "r-s"


def test_each_rate_of_a_sweep_is_a_tensorboard_run_of_its_own(tmp_path: Path) -> None:
    events = EventWriter("run", stream=io.StringIO())
    board = attach(events, tmp_path / "tensorboard")
    for rate in (5e-4, 2e-3):
        for step in (1, 2):
            events.metric("s", step, {"train/loss": step + rate}, sweep={"index": 0, "count": 2, "learning_rate": rate})
    events.metric("s", 1, {"sweep/eval_loss": 3.0, "sweep/learning_rate": 2e-3})
    board.close()
    assert _scalars(tmp_path / "tensorboard" / "s" / "lr-0.0005")["train/loss"] == [(1, pytest.approx(1.0005)),
                                                                          (2, pytest.approx(2.0005))]
    assert [s for s, _ in _scalars(tmp_path / "tensorboard" / "s" / "lr-0.002")["train/loss"]] == [1, 2]
    assert "train/loss" not in _scalars(tmp_path / "tensorboard" / "s")  # the summary only
