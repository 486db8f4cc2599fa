"""Sweeps and progress as the monitor shows them (issue 20, items 3 and 5): a learning-rate sweep is one series per
rate and a summary plotted per rate; whole-run progress counts every sweep point and every evaluated model from the
start and never runs backwards; the stage bar starts afresh with each stage; single points get a marker."""
from __future__ import annotations

import pytest

from engine.contract.protocol import Event
from studio.model.run_state import RunState

RATES = (5e-4, 2e-3)


def _sweep_events(tagged: bool, steps: int = 3) -> list[Event]:
    """A two-stage run whose first stage sweeps two learning rates, as the engine writes it (``tagged``) or as
    engines before the ``sweep`` field did (a log line before each rate)."""
    seq = iter(range(1, 1000))
    events = [Event("hello", {}, "r", next(seq), 0.0),
              Event("status", {"state": "running", "stage": "s", "message": "stage 1/2: sft", "index": 1,
                               "count": 2}, "r", next(seq), 0.0)]
    t = 0.0
    for i, rate in enumerate(RATES):
        point = {"index": i, "count": 2, "learning_rate": rate}
        events.append(Event("log", {"level": "info", "message": f"sweep {i + 1}/2: learning rate {rate:g}"}, "r",
                            next(seq), t))
        for step in range(1, steps + 1):
            t += 10.0
            extra = {"sweep": point} if tagged else {}
            events.append(Event("progress", {"stage": "s", "step": step, "total": steps, "fraction": step / steps,
                                             "elapsed_s": 10.0 * step, "eta_s": 10.0 * (steps - step), **extra},
                                "r", next(seq), t))
            events.append(Event("metric", {"stage": "s", "step": step, "values": {"train/loss": 3.0 - step + i},
                                           **extra}, "r", next(seq), t))
        events.append(Event("metric", {"stage": "s", "step": steps, "values": {"eval/ce": 2.0 + i}, **extra}, "r",
                            next(seq), t))
        events.append(Event("metric", {"stage": "s", "step": i, "values": {
            "sweep/eval_loss": 2.0 + i, "sweep/eval_ce": 2.5 + i, "sweep/learning_rate": rate}}, "r", next(seq), t))
    return events


@pytest.mark.parametrize("tagged", [True, False], ids=["sweep-field", "logged-only"])
def test_a_sweep_is_one_series_per_rate_and_progress_counts_every_point(tagged):
    state = RunState()
    fractions = []
    for event in _sweep_events(tagged):
        state.apply(event)
        if event.type == "progress":
            fractions.append(state.pipeline.fraction)
    series = state.metrics.series
    first, second = series["s (lr 0.0005) · train/loss"], series["s (lr 0.002) · train/loss"]
    assert list(first.x) == [1, 2, 3] and list(second.x) == [1, 2, 3]  # no line back from step 3 to step 1
    assert list(second.y) == [3.0, 2.0, 1.0]
    assert "s · train/loss" not in series
    summary = series["s · sweep/eval_loss"]
    assert list(summary.x) == list(RATES) and list(summary.y) == [2.0, 3.0]  # the metric per learning rate
    assert state.metrics.groups["s · sweep/eval_loss"] == "sweep" and "s · sweep/learning_rate" not in series
    # stage 1 of 2 in two points of three steps: 1/12, 2/12 … 6/12 of the run, never dropping
    assert fractions == pytest.approx([k / 12 for k in range(1, 7)])
    assert state.progress["fraction"] == pytest.approx(1.0) and state.progress["part"] == {"index": 1, "count": 2}


def test_the_stage_eta_counts_the_sweep_points_still_to_come():
    state = RunState()
    for event in _sweep_events(True)[:4]:  # hello, status, log, the first progress (point 1, step 1 of 3)
        state.apply(event)
    # this point: 20 s to go, and one more point of 30 s
    assert state.progress["eta_s"] == pytest.approx(20 + 30)
    assert state.pipeline.eta_s == pytest.approx(50 + 60)  # the second stage at this one's projected 60 s


def test_an_evaluation_moves_the_run_bar_model_by_model_and_the_stage_bar_restarts():
    state = RunState()
    state.apply(Event("hello", {}, "r", 1, 0.0))
    state.apply(Event("status", {"state": "running", "stage": "train", "message": "", "index": 1, "count": 2},
                      "r", 2, 0.0))
    state.apply(Event("progress", {"stage": "train", "step": 12, "total": 12, "fraction": 1.0, "elapsed_s": 100.0,
                                   "eta_s": 0.0}, "r", 3, 100.0))
    state.apply(Event("status", {"state": "running", "stage": "eval", "message": "stage 2/2: evaluate",
                                 "index": 2, "count": 2}, "r", 4, 100.0))
    assert state.progress == {}  # not the training's "12/12 · 100 %"
    assert state.pipeline.fraction == pytest.approx(0.5)
    state.apply(Event("progress", {"stage": "eval:teacher", "step": 50, "total": 100, "fraction": 0.5,
                                   "elapsed_s": 20.0, "eta_s": 20.0, "part": {"index": 0, "count": 2}},
                      "r", 5, 120.0))
    assert state.pipeline.fraction == pytest.approx((1 + 0.25) / 2)
    assert state.pipeline.eta_s == pytest.approx(20 + 40)  # this model's 20 s, then the other at 40 s
    state.apply(Event("progress", {"stage": "eval:student", "step": 10, "total": 100, "fraction": 0.1,
                                   "elapsed_s": 4.0, "eta_s": 36.0, "part": {"index": 1, "count": 2}},
                      "r", 6, 144.0))
    assert state.pipeline.fraction == pytest.approx((1 + 0.55) / 2) and state.pipeline.eta_s == pytest.approx(36)


def test_plots_draw_each_rate_apart_the_summary_per_rate_and_single_points_with_markers(qtbot):
    import numpy as np

    from studio.widgets.metric_plots import MetricPlots

    state = RunState()
    for event in _sweep_events(True):
        state.apply(event)
    state.metrics.add("kd", 40, {"eval/kd_loss": 1.5})  # one validation point: a marker, or nothing shows
    plots = MetricPlots(refresh_ms=10_000)
    qtbot.addWidget(plots)
    plots.set_store(state.metrics)
    assert "Learning-rate sweep (validation)" in plots.plot_titles()
    first, second = (plots.curve_pen(f"s (lr {r:g}) · train/loss").color().name() for r in RATES)
    assert first != second  # own colour, own legend entry
    assert plots.legend.item_for("s (lr 0.0005)") and plots.legend.item_for("s (lr 0.002)")
    sweep_plot = plots._plots["sweep"]
    assert "learning rate" in sweep_plot.getAxis("bottom").labelString()
    assert "x0.001" not in sweep_plot.getAxis("bottom").labelString()  # the ticks are the rates themselves
    ticks = sweep_plot.getAxis("bottom")._tickLevels[0]
    assert [label for _, label in ticks] == ["0.0005", "0.002"]
    low, high = sweep_plot.vb.viewRange()[0]
    assert low < np.log10(5e-4) < np.log10(2e-3) < high and high - low < 3  # side by side, not ±400
    summary = plots._curves["s · sweep/eval_loss"][1]
    assert summary.opts["pen"] is None and summary.opts["symbol"] is not None  # points, no line between rates
    assert plots._curves["kd · eval/kd_loss"][1].opts["symbol"] is not None
    assert plots._curves["s (lr 0.002) · eval/ce"][1].opts["symbol"] is not None
    assert plots.readout_at("sweep", 2.1e-3).startswith("learning rate 0.002 — ")


DEMO_PLAN = [{"stage": "teacher_sft", "kind": "sft", "model": "teacher", "steps": 1200},
             {"stage": "student_sft", "kind": "sft", "model": "student", "steps": 600},
             {"stage": "student_kd", "kind": "distill", "model": "student", "steps": 600},
             {"stage": "eval", "kind": "evaluate", "model": "student", "steps": None}]


def _start(state: RunState, index: int, time: float) -> None:
    stage = DEMO_PLAN[index - 1]
    state.apply(Event("status", {"state": "running", "stage": stage["stage"], "message": "", "index": index,
                                 "count": 4, "plan": DEMO_PLAN}, "r", index * 100, time))


def _progress(state: RunState, stage: str, step: int, total: int, per_step: float, time: float) -> None:
    state.apply(Event("progress", {"stage": stage, "step": step, "total": total, "fraction": step / total,
                                   "elapsed_s": step * per_step, "eta_s": (total - step) * per_step,
                                   "unit": "step"}, "r", int(time) + 1000, time))


def test_the_run_eta_weighs_the_stages_to_come_by_their_steps_and_measured_rates():
    """The demo as bench/RESULTS.md measured it: teacher SFT 1,200 steps at 0.207 s, student SFT 600 at 0.058 s,
    KD 600 steps, a short evaluation. Counting stages as equal shares said 3 × the teacher's 248 s more."""
    state = RunState()
    state.apply(Event("hello", {}, "r", 1, 0.0))
    _start(state, 1, 0.0)
    _progress(state, "teacher_sft", 100, 1200, 0.207, 20.7)
    clock = state.pipeline
    # the teacher's 1,100 steps left, then 1,200 student steps at the only rate measured yet (the teacher's)
    assert clock.eta_s == pytest.approx(1100 * 0.207 + 1200 * 0.207)
    assert clock.not_included == ["eval"]  # named beside the ETA, never silently 0
    _start(state, 2, 248.0)
    _progress(state, "student_sft", 60, 600, 0.058, 248.0 + 3.48)
    assert clock.eta_s == pytest.approx(540 * 0.058 + 600 * 0.058)  # the student's own rate now
    _start(state, 3, 283.0)
    _start(state, 4, 359.0)  # KD done: the evaluation's parts time themselves
    state.apply(Event("progress", {"stage": "eval:teacher", "step": 100, "total": 200, "fraction": 0.5,
                                   "elapsed_s": 1.0, "eta_s": 1.0, "unit": "answer", "part": {"index": 0, "count": 3}},
                      "r", 5000, 360.0))
    assert clock.eta_s == pytest.approx(1.0 + 2 * 2.0) and clock.not_included == []
    assert clock.fraction == pytest.approx((3 + 0.5 / 3) / 4)


def test_the_stage_bar_starts_afresh_and_names_the_sweep_point(qtbot):
    from studio.widgets.run_panels import ProgressPanel

    panel = ProgressPanel()
    qtbot.addWidget(panel)
    state = RunState()
    for event in _sweep_events(True)[:4]:
        state.apply(event)
    panel.show_state(state)
    assert panel.bar.format().startswith("learning rate 0.0005 (1/2)  ·  1/3 steps")
    assert panel.bar.value() == round(1000 / 6)  # one step of three, of the first of two rates
    state.apply(Event("progress", {"stage": "s", "step": 3, "total": 3, "fraction": 1.0, "elapsed_s": 3.0,
                                   "eta_s": 0.0}, "r", 50, 50.0))
    state.apply(Event("status", {"state": "running", "stage": "t", "message": "", "index": 2, "count": 2}, "r", 51,
                      50.0))
    panel.show_state(state)
    assert panel.bar.value() == 0 and "3/3" not in panel.bar.format() and panel.eta_label.text() == "starting…"


def test_before_a_stages_first_step_the_eta_counts_its_planned_steps_and_its_sub_phase():
    """KD starts with the teacher answering prompts (a sub-phase with its own ETA), then trains its steps."""
    state = RunState()
    state.apply(Event("hello", {}, "r", 1, 0.0))
    _start(state, 2, 0.0)
    _progress(state, "student_sft", 600, 600, 0.058, 34.8)
    _start(state, 3, 35.0)
    clock = state.pipeline
    assert clock.eta_s == pytest.approx(600 * 0.058)  # KD's 600 steps at the student's rate; eval not timed
    state.apply(Event("progress", {"stage": "student_kd:teacher", "step": 500, "total": 2295, "fraction": 0.22,
                                   "elapsed_s": 10.0, "eta_s": 36.0, "unit": "answer"}, "r", 7000, 45.0))
    assert clock.eta_s == pytest.approx(36.0 + 600 * 0.058) and clock.fraction == pytest.approx(0.5)
