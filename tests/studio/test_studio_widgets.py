"""Widgets on their own: plots (grouping, 100k-point settings, incremental redraw, hover, log scale), the
evaluation table, settings persistence, the About box's versions, and the screenshot script."""
from __future__ import annotations

import importlib.metadata

import pytest

pytestmark = pytest.mark.usefixtures("home")


def test_plots_group_curves_and_redraw_only_what_changed(qtbot):
    from studio.model.run_state import MetricStore
    from studio.widgets.metric_plots import MetricPlots

    plots = MetricPlots()
    qtbot.addWidget(plots)
    store = MetricStore()
    for step in range(1, 100_001):  # 100,000 points per curve
        store.add("kd", step, {"kd/ce": 1.0 / step, "train/lr": 1e-3})
    plots.set_store(store)
    assert sorted(plots.plot_titles()) == ["Learning rate", "Loss · CE · divergence"]
    raw, smooth = plots._curves["kd · kd/ce"]
    assert smooth.opts["autoDownsample"] and smooth.opts["clipToView"] and smooth.opts["downsampleMethod"] == "peak"
    assert plots.refresh() == 0  # nothing new, nothing redrawn
    store.add("kd", 100_001, {"kd/ce": 0.5})
    assert plots.refresh() == 1  # only the curve that moved
    x, _ = plots.curve_data("kd · kd/ce")
    assert len(x) == 100_001
    assert plots.readout_at("loss", 10.2).startswith("step 10 — kd · kd/ce: 0.1")
    lo, hi = plots._plots["lr"].viewRange()[1]
    assert lo == pytest.approx(5e-4) and hi == pytest.approx(1.5e-3)  # a flat lr gets a readable range
    plots.log_check.setChecked(True)
    assert plots._plots["loss"].ctrl.logYCheck.isChecked()
    plots.set_smoothing(0.0)
    assert plots.smoothing == 0.0 and raw.isVisible() is False


def test_eval_table_is_tolerant_of_missing_keys(qtbot):
    from studio.widgets.run_panels import EvalTable

    table = EvalTable()
    qtbot.addWidget(table)
    table.show_report({"reference": "teacher", "models": {
        "teacher": {"rougeL": 0.5, "exact_match": 0.2, "retention": 1.0, "per_category": {"qa": {"rougeL": 0.4}}},
        "kd_student": {"rougeL": 0.45, "retention": 0.9},
        "broken": "not a dict"}})
    assert table.table.rowCount() == 3
    assert [table.cell(1, c) for c in range(5)] == ["kd_student", "0.450", "—", "90.0 %", "—"]
    assert table.cell(0, 4) == "0.400" and table.cell(0, 0) == "teacher  (reference)"
    assert table.grpo_table.isHidden()  # no GRPO stage in this run
    table.show_report({})
    assert table.table.rowCount() == 0 and table.caption.text() == "No evaluation yet."


def test_eval_table_shows_grpo_before_and_after(qtbot):
    from studio.widgets.run_panels import EvalTable

    table = EvalTable()
    qtbot.addWidget(table)
    table.show_report({"grpo": {"grpo": {"before": {"correct": 0.267, "tests_passed": 0.621, "format": 0.915},
                                         "after": {"correct": 0.317, "answers_correct": None}}}})
    grpo = table.grpo_table
    assert not grpo.isHidden() and grpo.rowCount() == 2
    assert [grpo.item(0, c).text() for c in range(4)] == ["grpo · before", "26.7 %", "—", "62.1 %"]
    assert grpo.item(1, 0).text() == "grpo · after" and grpo.item(1, 1).text() == "31.7 %"
    assert table.caption.text() == "No model comparison in this run." and table.table.isHidden()


def test_settings_round_trip_and_about_versions(home):
    from studio.model.app_settings import StudioSettings, load_settings, save_settings, settings_path
    from studio.widgets.preferences_dialog import library_versions

    assert load_settings() == StudioSettings()
    save_settings(StudioSettings(device="cpu", smoothing=0.3, first_run_done=True))
    assert settings_path().parent == home
    loaded = load_settings()
    assert (loaded.device, loaded.smoothing, loaded.first_run_done) == ("cpu", 0.3, True)
    settings_path().write_text("{broken", encoding="utf-8")
    assert load_settings() == StudioSettings()
    versions = library_versions(("PySide6-Essentials", "no-such-package-xyz"))
    assert versions == {"PySide6-Essentials": importlib.metadata.version("PySide6-Essentials"),
                        "no-such-package-xyz": "not installed"}


def test_screenshot_script_saves_every_page(tmp_path, qtbot):
    from tools.screenshots import render_all

    files = render_all(tmp_path / "shots", quick=True)
    names = {f.stem for f in files}
    assert {"01-start", "02-wizard-models", "03-wizard-data", "05-wizard-settings-refused", "06-wizard-review",
            "07-monitor-curves", "09-monitor-evaluation", "10-history", "11-chat"} <= names
    assert all(f.stat().st_size > 10_000 for f in files)  # real renderings, not empty images


def test_every_page_of_the_window_opens(window):
    from studio.arena.arena_widget import ArenaWidget

    for page in ("New run", "Monitor", "History", "Chat", "Start"):
        window.go_to(page)
        assert window.current_page() == page
    assert isinstance(window.chat, ArenaWidget)  # mounted on first visit
    assert window.monitor.session is None and window.monitor.title.text() == "No run yet"


def test_sample_card_shows_each_reward_and_marks_the_ones_that_do_not_apply():
    from studio.model.run_state import Sample
    from studio.widgets.run_panels import SamplesPanel

    sample = Sample(stage="grpo", step=20, prompt="Calculate 8 times 4.", completion="<answer>32</answer>",
                    rewards={"answer_correct": 1.0, "code_tests": None, "length": 0.9375})
    card = SamplesPanel._card(sample)
    assert "<b>answer_correct</b> 1" in card and "<b>code_tests</b> n/a" in card and "<b>length</b> 0.938" in card
    assert "step 20" in card and "Calculate 8 times 4." in card


def test_plot_colours_follow_the_stage_and_only_noisy_series_are_smoothed(qtbot):
    from studio.model.run_state import MetricStore
    from studio.widgets.metric_plots import MetricPlots

    plots = MetricPlots()
    qtbot.addWidget(plots)
    store = MetricStore()
    for step in range(1, 41):
        noise = 0.3 * (-1) ** step
        for stage in ("teacher_sft", "student_kd"):
            store.add(stage, step, {"train/loss": 2.0 / step + noise, "train/lr": 1e-3 * (1 - step / 40)})
        store.add("student_kd", step, {"kd/divergence": 1.0 / step + noise})
    store.add("student_kd", 40, {"eval/loss": 0.9})
    store.add("student_kd", 20, {"eval/loss": 1.1})
    plots.set_store(store)
    plots.set_smoothing(0.6)
    color = {label: plots.curve_pen(label).color().name() for label in store.series}
    assert color["student_kd · train/loss"] == color["student_kd · train/lr"] == color["student_kd · kd/divergence"]
    assert color["teacher_sft · train/loss"] == color["teacher_sft · train/lr"] != color["student_kd · train/loss"]
    styles = {label: plots.curve_pen(label).style() for label in store.series}
    assert styles["student_kd · train/loss"] != styles["student_kd · kd/divergence"]  # one plot, two metrics
    assert plots.is_smoothed("student_kd · train/loss") and plots.is_smoothed("student_kd · kd/divergence")
    assert not plots.is_smoothed("student_kd · train/lr") and not plots.is_smoothed("student_kd · eval/loss")
    lr = plots._curves["student_kd · train/lr"][1].getData()[1]
    assert list(lr) == list(store.series["student_kd · train/lr"].y)  # the schedule as it was, not averaged
    loss = plots._curves["student_kd · train/loss"][1].getData()[1]
    assert abs(loss[-1] - store.series["student_kd · train/loss"].y[-1]) > 0.05  # averaged
    assert plots.legend.entries() == ["Runs and stages", "teacher_sft", "student_kd", "Metrics", "train/loss",
                                      "train/lr", "kd/divergence", "eval/loss"]


def test_overlay_legend_lists_every_run_beside_the_plots(qtbot):
    from PySide6.QtCore import Qt

    from studio.model.run_state import MetricStore
    from studio.widgets.metric_plots import MetricPlots

    plots = MetricPlots()
    qtbot.addWidget(plots)
    plots.resize(1000, 600)
    store = MetricStore()
    runs = [f"sweep-lr-{i}" for i in range(4)]
    stages = ("teacher_sft", "student_sft", "student_kd", "grpo")
    for run in runs:
        for stage in stages:
            for step in range(1, 6):
                store.add(stage, step, {"train/loss": 1.0 / step}, prefix=run)
    plots.set_store(store)
    plots.show()
    qtbot.waitExposed(plots)
    keys = [f"{run} · {stage}" for run in runs for stage in stages]
    entries = plots.legend.entries()  # all 16, not the 4 a legend box inside the plot had room for
    assert entries[:6] == ["Runs and stages", "sweep-lr-0", "   teacher_sft", "   student_sft", "   student_kd",
                           "   grpo"]
    assert [e for e in entries if e.startswith("sweep")] == runs and all(plots.legend.item_for(k) for k in keys)
    colors = {plots.curve_pen(f"{key} · train/loss").color().name() for key in keys}
    assert len(colors) == 16
    assert not plots.legend.geometry().intersects(plots.canvas.geometry())  # beside the data, not on it
    item = plots.legend.item_for(keys[5])
    assert item.toolTip() == keys[5]
    assert item.icon().pixmap(28, 12).toImage().pixelColor(14, 6).name() == \
        plots.curve_pen(f"{keys[5]} · train/loss").color().name()  # the entry is drawn in its curve's colour
    item.setCheckState(Qt.CheckState.Unchecked)  # ticking an entry off hides its curve
    assert not plots._curves[f"{keys[5]} · train/loss"][1].isVisible()
