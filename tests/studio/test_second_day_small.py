"""Issue 20, item 8: the smaller things a person at the GUI tripped over, each checked on values or geometry."""
from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt

pytestmark = pytest.mark.usefixtures("home")


def _data_file(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"Add {i} and 1", "output": str(i + 1)}) for i in range(30)))
    return path


def test_local_file_shows_preview_and_mapping_as_soon_as_it_is_picked(window, tmp_path):
    window.go_to("New run")
    window.wizard.next()
    page = window.wizard.data_page
    page.set_path(str(_data_file(tmp_path)))  # typed while a demo preset was chosen: switches to the local file
    assert page.table.rowCount() == 20
    page.set_preset("demo")
    page.set_preset("local")  # back to the file already named: previewed and mapped at once
    assert page.table.rowCount() == 20 and page.table.isVisible() and page.mapping_box.isVisible()
    assert page.columns() == {"instruction": "prompt", "response": "output"}
    page.set_preset("demo")
    page.path.clear()
    page.set_preset("local")
    assert "Choose a file" in page.preview_status.text()


def test_enter_in_the_file_field_reads_the_file_and_stays_on_the_page(window, qtbot, tmp_path):
    window.go_to("New run")
    wizard = window.wizard
    wizard.next()
    page = wizard.data_page
    page.set_preset("local")
    page.path.setFocus()
    page.path.setText(str(_data_file(tmp_path)))
    qtbot.keyClick(page.path, Qt.Key.Key_Return)
    assert wizard.currentPage() is page and page.path.hasFocus()
    assert page.table.rowCount() == 20


def test_the_review_page_reuses_one_spec_file_and_its_error_line_moves_nothing(window, qtbot):
    from studio.pages.review_page import specs_dir

    window.go_to("New run")
    wizard = window.wizard
    for visit in range(3):  # three visits of the review page, going back to the settings page between them
        for _ in range(4):
            wizard.next()
        assert wizard.currentPage() is wizard.review_page
        if visit < 2:
            wizard.back()
    review = wizard.review_page
    assert [p.name for p in specs_dir().iterdir()] == [review.spec_path.name]
    review.yaml.setPlainText(review.yaml.toPlainText().replace("name: my-run", "name: renamed", 1))
    assert review.apply_yaml()
    assert [p.name for p in specs_dir().iterdir()] == [review.spec_path.name] and "renamed" in review.spec_path.name
    qtbot.waitUntil(lambda: review.yaml.height() > 0)
    before = review.yaml.geometry()
    review.yaml.setPlainText(review.yaml.toPlainText().replace("name: renamed", "name: [", 1))
    assert not review.apply_yaml() and review.error_label.isVisible()
    assert review.yaml.geometry() == before  # the editor under the cursor did not shrink
    assert review.error_label.toolTip() == review.error_label.text()[3:]


def test_two_quick_demos_get_distinct_names(window, qtbot):
    from studio.main_window import unique_title

    assert unique_title("demo (quick)", ["demo (quick)", "demo (quick) #2"]) == "demo (quick) #3"
    first, second = window.start_demo(quick=True), window.start_demo(quick=True)
    assert (first.title, second.title) == ("demo (quick)", "demo (quick) #2")
    assert [window.monitor.selector.itemText(i) for i in range(2)] == ["demo (quick)", "demo (quick) #2"]
    qtbot.waitUntil(lambda: first.state.done and second.state.done, timeout=20000)


def test_history_shows_five_runs_at_1024_by_700(window, qtbot):
    from engine.contract.runs import RunStore

    store = RunStore()
    for i in range(8):
        store.create(f"run-{i}", "name: x\n")
    window.resize(1024, 700)
    window.go_to("History")
    history = window.history
    history.records = []
    history.refresh()
    qtbot.waitUntil(lambda: history.table.viewport().height() > 0)
    table = history.table
    visible = sum(1 for row in range(table.rowCount())
                  if table.visualRect(table.model().index(row, 0)).bottom() <= table.viewport().height())
    assert visible >= 5


def _grpo_store(steps: int = 12):
    from studio.model.run_state import MetricStore

    store = MetricStore()
    for step in range(1, steps + 1):
        store.add("grpo", step, {"train/loss": 1 / step, "grpo/reward": 0.1 * step, "grpo/kl": 0.001 * step,
                                 "train/learning_rate": 1e-4, "grpo/completion_length": 30 + step,
                                 "perf/tokens_per_s": 100.0, "train/grad_norm": 1.0})
    store.add("grpo", 0, {"grpo/correct_before": 0.2})
    store.add("grpo", steps, {"grpo/correct_after": 0.3})
    return store


def test_seven_grpo_plots_stay_readable_at_1024_by_700_and_steps_are_whole(qtbot):
    from PySide6.QtWidgets import QApplication

    from studio.widgets.metric_plots import MetricPlots

    plots = MetricPlots()
    qtbot.addWidget(plots)
    plots.resize(1024 - 180, 700 - 260)  # the monitor's tab at 1024×700 (side bar, header, progress)
    plots.show()
    plots.set_store(_grpo_store())
    QApplication.processEvents()
    items = list(plots._plots.values())
    assert len(items) >= 7
    assert min(item.vb.height() for item in items) >= 100  # they were ~30 px: the canvas scrolls instead
    assert plots.scroller.verticalScrollBar().maximum() > 0
    axis = items[0].getAxis("bottom")
    values = [v for _spacing, level in axis.tickValues(1, 12, 400) for v in level]
    assert values and all(v == int(v) for v in values)  # no step 2.5 in a 12-step run
    left = items[0].getAxis("left")
    assert left.style["autoReduceTextSpace"] is False and left.style["hideOverlappingLabels"] is False


def test_the_hover_line_goes_when_the_pointer_leaves(qtbot):
    from PySide6.QtCore import QEvent
    from PySide6.QtWidgets import QApplication

    from studio.widgets.metric_plots import MetricPlots

    plots = MetricPlots()
    qtbot.addWidget(plots)
    plots.resize(800, 600)
    plots.show()
    plots.set_store(_grpo_store())
    group, plot = next(iter(plots._plots.items()))
    plots._on_scene_mouse_moved(plot.sceneBoundingRect().center())
    assert plots._hover_lines[group].isVisible()
    QApplication.sendEvent(plots.canvas, QEvent(QEvent.Type.Leave))
    assert not any(line.isVisible() for line in plots._hover_lines.values())


def test_status_bar_notes_end_on_time_and_come_back_after_a_menus_tip(window, qtbot):
    from PySide6.QtGui import QStatusTipEvent
    from PySide6.QtWidgets import QApplication

    from studio.widgets.status_bar import NOTE_MS

    bar = window.statusBar()
    assert bar.place.text().startswith("Runs in ") and bar.currentMessage() != bar.place.text()
    bar.showMessage("Started: demo")
    assert bar.currentMessage() == "Started: demo" and 5_000 <= NOTE_MS <= 60_000
    QApplication.sendEvent(window, QStatusTipEvent("Open a run spec"))  # the pointer over a menu entry
    assert bar.currentMessage() == "Open a run spec"
    QApplication.sendEvent(window, QStatusTipEvent(""))  # the menu closed
    qtbot.waitUntil(lambda: bar.currentMessage() == "Started: demo", timeout=1000)
    bar.showMessage("brief", 150)
    qtbot.wait(400)
    assert bar.currentMessage() == ""
    QApplication.sendEvent(window, QStatusTipEvent("tip"))
    QApplication.sendEvent(window, QStatusTipEvent(""))
    qtbot.wait(50)
    assert bar.currentMessage() == ""  # an expired note does not come back


def test_the_evaluation_tab_shows_every_row_of_a_wide_table(window, qtbot):
    from PySide6.QtWidgets import QApplication

    categories = {c: {"rougeL": 0.3} for c in ("arithmetic", "code", "general", "reasoning", "translation", "words")}
    report = {"reference": "teacher", "models": {
        name: {"rougeL": 0.4, "exact_match": 0.1, "retention": 0.9, "ce": 2.0, "per_category": categories}
        for name in ("teacher", "sft_student", "kd_student")},
        "grpo": {"grpo": {"before": {"correct": 0.2}, "after": {"correct": 0.3}}}}
    window.resize(1024, 700)
    window.go_to("Monitor")
    monitor = window.monitor
    monitor.tabs.setCurrentWidget(monitor.eval_table)
    monitor.eval_table.show_report(report)
    QApplication.processEvents()
    table = monitor.eval_table.table
    qtbot.waitUntil(lambda: table.horizontalScrollBar().isVisible())  # wider than the tab: a scroll bar
    bottoms = [table.visualRect(table.model().index(row, 0)).bottom() for row in range(3)]
    assert max(bottoms) <= table.viewport().height()  # the third row is not under the bar
