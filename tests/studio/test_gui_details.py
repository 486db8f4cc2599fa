"""Defects found by driving the studio as a person does (Xvfb, real mouse and keyboard), each pinned by a test:
the window on a small screen, stale read-outs and scroll positions, evaluation numbers that were drawn as curves,
several runs' evaluations, messages that said nothing or said it twice, the arena's pickers and tally."""
from __future__ import annotations

import json

import pytest
from PySide6.QtCore import QSize

from engine.contract.protocol import Event


def _event(kind: str, seq: int, **data) -> Event:
    return Event(kind, data, seq=seq, run_id="r1")


# -- the window on a laptop screen ---------------------------------------------------------------------------------
def test_first_size_fits_a_1280_by_800_screen():
    from studio.main_window import initial_size

    size = initial_size(QSize(1280, 800))
    assert size.width() <= 1280 - 16 and size.height() <= 800 - 48  # the frame and the status bar on screen
    assert initial_size(QSize(2560, 1440)) == QSize(1280, 820)  # a large screen keeps the preferred size
    assert initial_size(None) == QSize(1280, 820)


# -- the monitor --------------------------------------------------------------------------------------------------
def test_hover_readout_of_one_run_is_not_shown_over_the_next(qtbot):
    from studio.model.run_state import MetricStore
    from studio.widgets.metric_plots import HOVER_HINT, MetricPlots

    plots = MetricPlots()
    qtbot.addWidget(plots)
    first = MetricStore()
    first.add("teacher_sft", 50, {"train/loss": 2.676})
    plots.set_store(first)
    plots.readout.setText(plots.readout_at("loss", 50))
    assert plots.readout.text().startswith("step 50")
    plots.set_store(MetricStore())  # another run in the monitor
    assert plots.readout.text() == HOVER_HINT


def test_log_filled_while_its_tab_was_hidden_opens_at_the_start_of_its_lines(qtbot):
    from PySide6.QtWidgets import QLabel, QTabWidget

    from studio.model.run_state import RunState
    from studio.widgets.log_panel import LogView

    tabs = QTabWidget()
    qtbot.addWidget(tabs)
    tabs.addTab(QLabel("curves"), "Curves")
    log_view = LogView()
    tabs.addTab(log_view, "Log")
    tabs.resize(400, 200)
    tabs.show()
    state = RunState()
    for _ in range(3):
        state.add_log("model folder /tmp/no/such/model does not exist; give a folder saved with save_pretrained, "
                      "a .gguf file or a hub id. (the engine exited with code 2 before finishing)")
    log_view.show_state(state)
    tabs.setCurrentIndex(1)
    qtbot.waitExposed(log_view)
    bar = log_view.horizontalScrollBar()
    assert bar.maximum() > 0 and bar.value() == 0  # was scrolled to the right end: every line cut at its start
    assert log_view.verticalScrollBar().value() == log_view.verticalScrollBar().maximum()  # still at the newest


def test_failure_banner_has_one_full_stop(qtbot):
    from studio.model.run_state import RunState
    from studio.run_session import RunSession
    from studio.widgets.run_monitor import RunMonitor

    monitor = RunMonitor()
    qtbot.addWidget(monitor)
    state = RunState()
    state.fail("model folder /x does not exist; give a folder saved with save_pretrained, a .gguf file or a hub id.")
    monitor.add_session(RunSession("kd", state=state))
    monitor.refresh()
    text = monitor.error_banner.text()
    assert "hub id.  The <a href='log'>Log tab</a> has the engine's last words." in text and ".." not in text


def test_per_model_final_scores_are_a_table_not_a_vertical_line_in_the_loss_plot():
    from studio.model.run_state import RunState

    state = RunState()
    state.apply(_event("metric", 1, stage="student_kd", step=10, values={"train/loss": 3.0, "eval/ce": 3.2}))
    for seq, (model, ce) in enumerate((("teacher", 6.34), ("sft_student", 6.16), ("kd_student", 6.16)), start=2):
        state.apply(_event("metric", seq, stage="eval", step=0, model=model,
                           values={"eval/rougeL": 0.0, "eval/ce": ce}))
    assert set(state.metrics.series) == {"student_kd · train/loss", "student_kd · eval/ce"}


def test_eval_table_shows_each_models_held_out_cross_entropy(qtbot):
    from studio.widgets.run_panels import EvalTable

    table = EvalTable()
    qtbot.addWidget(table)
    table.show_report({"reference": "teacher", "models": {
        "teacher": {"rougeL": 0.0, "exact_match": 0.0, "ce": 6.3399},
        "kd_student": {"rougeL": 0.0, "exact_match": 0.0, "ce": 6.1627, "retention": None}}})
    headers = [table.table.horizontalHeaderItem(c).text() for c in range(table.table.columnCount())]
    assert headers[:5] == ["model", "ROUGE-L", "exact match", "retention", "CE"]
    assert [table.table.item(r, 4).text() for r in range(2)] == ["6.340", "6.163"]


def test_grad_norm_has_a_titled_plot():
    from engine.contract.metric_names import METRIC_GROUPS, metric_group

    assert dict(METRIC_GROUPS)[metric_group("train/grad_norm")] == "Gradient norm"


# -- the history --------------------------------------------------------------------------------------------------
def _finished_run(store, name: str, report: dict | None):
    paths = store.create(name, f"name: {name}\n")
    store.update(paths.id, status="finished")
    if report is not None:
        (paths.root / "eval.json").write_text(json.dumps(report), encoding="utf-8")
    return paths


def test_several_selected_runs_show_their_evaluations_side_by_side(qtbot, home):
    from engine.contract.runs import RunStore
    from studio.widgets.history import HistoryView

    store = RunStore()
    report = {"reference": "teacher", "models": {"teacher": {"rougeL": 0.5}, "kd_student": {"rougeL": 0.4,
                                                                                            "retention": 0.8}}}
    a = _finished_run(store, "kd-a", report)
    b = _finished_run(store, "kd-b", {"reference": "teacher", "models": {"kd_student": {"rougeL": 0.3}}})
    history = HistoryView(store)
    qtbot.addWidget(history)
    history.select_run(a.id)
    history.select_run(b.id, add=True)
    rows = [history.eval_table.table.item(r, 0).text() for r in range(history.eval_table.table.rowCount())]
    assert sorted(rows) == ["kd-a · kd_student", "kd-a · teacher", "kd-b · kd_student"]  # was "No evaluation yet."
    assert "2 runs" in history.eval_table.caption.text()


def test_repeated_run_names_keep_their_rows_apart():
    from studio.model.history_data import compare_reports

    one = {"models": {"kd_student": {"rougeL": 0.1}}}
    two = {"models": {"kd_student": {"rougeL": 0.2}}}
    merged = compare_reports([("demo", one), ("demo", two), ("other", None)])
    assert merged["models"] == {"demo · kd_student": {"rougeL": 0.1}, "demo (2) · kd_student": {"rougeL": 0.2}}
    assert compare_reports([("x", None)]) is None


def test_open_folder_without_a_file_manager_says_where_the_folder_is(qtbot, home):
    from PySide6.QtWidgets import QApplication

    from engine.contract.runs import RunStore
    from studio.widgets.history import HistoryView

    store = RunStore()
    paths = _finished_run(store, "kd", None)
    history = HistoryView(store)
    qtbot.addWidget(history)
    told = []
    history.open_folder = lambda path: False  # no xdg-open: the click used to do nothing at all
    history.notify = lambda parent, title, text: told.append(text)
    history.select_run(paths.id)
    history.folder_button.click()
    assert len(told) == 1 and str(paths.root) in told[0]
    assert QApplication.clipboard().text() == str(paths.root)


def test_start_page_and_close_question_count_in_words(window):
    window.start_page.show_recent(1, 0)
    assert window.start_page.recent.text() == "1 run in the history."
    window.start_page.show_recent(3, 1)
    assert window.start_page.recent.text() == "3 runs in the history, 1 still running."


# -- the arena ----------------------------------------------------------------------------------------------------
def test_tally_pairs_are_told_apart_from_names_with_dots():
    from studio.arena.controls import VoteBar
    from studio.arena.votes import tally

    bar = VoteBar()
    votes = [{"models": {"A": "run · kd", "B": "run · sft", "C": "run · teacher"}, "winner": "run · kd"}]
    bar.set_tally(tally(votes))
    pairs = bar.tally_label.text().removeprefix("Tally: ").split(";")
    assert [p.strip() for p in pairs] == ["run · kd 1 – 0 run · sft", "run · kd 1 – 0 run · teacher"]


def test_an_answer_of_only_whitespace_does_not_look_like_nothing():
    from studio.arena.turns import Turn
    from studio.arena.export import _answer_text
    from studio.arena.panes import turn_html

    turn = Turn(user="Sort 58, 34", request_id="r1", answer=" " * 128, status="finished", completion_tokens=128)
    assert "only whitespace: 128 characters" in turn_html(turn, "")
    assert _answer_text(" " * 128) == "(only whitespace: 128 characters)" and _answer_text("") == "(no answer)"
    one = Turn(user="hi", request_id="r2", answer="", status="finished", completion_tokens=1)
    assert one.stats("").startswith("1 token ·") or one.stats("") == "1 token"


def test_pane_picker_shows_the_model_name_in_a_1024_pixel_window(qtbot):
    from studio.arena.catalog import ModelChoice
    from studio.arena.panes import ChatPane
    from PySide6.QtWidgets import QHBoxLayout, QWidget

    row = QWidget()
    qtbot.addWidget(row)
    layout = QHBoxLayout(row)
    panes = [ChatPane(f"pane{i}") for i in range(3)]
    for pane in panes:
        layout.addWidget(pane)
    row.resize(864, 400)  # three panes beside the 150-pixel page list of a 1024-pixel window
    row.show()
    qtbot.waitExposed(row)
    label = "demo-quick · student_kd"
    panes[0].set_choices([ModelChoice(label=label, source="/runs/x/models/student_kd", role="student")],
                         ModelChoice(label=label, source="/runs/x/models/student_kd", role="student"))
    combo = panes[0].model_combo
    assert combo.lineEdit().fontMetrics().horizontalAdvance(label) <= combo.lineEdit().width()


def test_preferences_show_whole_paths(qtbot, home):
    from studio.model.app_settings import StudioSettings
    from studio.widgets.preferences_dialog import SettingsDialog

    dialog = SettingsDialog(StudioSettings(engine_python="/work/venv/bin/python"))
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    edit = dialog.engine_python
    assert edit.fontMetrics().horizontalAdvance(edit.text()) < edit.width()


# -- the wizard ---------------------------------------------------------------------------------------------------
def test_a_model_folder_that_is_not_there_is_refused_before_the_launch(window, tmp_path):
    window.go_to("New run")
    page = window.wizard.models_page
    page.teacher.source.setEditText(str(tmp_path / "no" / "such" / "model"))
    assert "teacher.source: the model folder" in page.problem() and "does not exist" in page.problem()
    assert not window.wizard.button(window.wizard.WizardButton.NextButton).isEnabled()
    (tmp_path / "empty").mkdir()
    page.teacher.source.setEditText(str(tmp_path / "empty"))
    assert "no config.json" in page.problem()
    page.student.source.setEditText(str(tmp_path / "missing.gguf"))
    page.teacher.source.setEditText("Qwen/Qwen2.5-0.5B-Instruct")  # a hub id: only the engine can tell
    assert page.problem().startswith("student.source: the GGUF file")
    page.student.source.setEditText("demo:student")
    assert page.problem() == ""


def test_what_was_read_of_a_model_goes_when_its_source_changes(window):
    window.go_to("New run")
    page = window.wizard.models_page
    page._on_inspector_failed("/tmp/no/such/model", "model folder /tmp/no/such/model does not exist")
    page.teacher.source.setEditText("/tmp/no/such/model")
    page._on_inspector_failed("/tmp/no/such/model", "model folder /tmp/no/such/model does not exist")
    assert page.teacher.info.text().startswith("Could not read it")
    assert page.teacher.info.objectName() == "hintProblem"  # red (studio.qss), not a grey hint
    page.teacher.source.setEditText("demo:teacher")
    assert page.teacher.info.text() == "Not inspected yet." and page.teacher.info.objectName() == "hint"


def test_a_click_on_a_page_does_not_leave_the_page_list_ringed(window):
    from PySide6.QtCore import Qt

    assert window.nav.focusPolicy() == Qt.FocusPolicy.TabFocus  # Tab reaches it; a click does not focus it
    assert window.focusWidget() is window.start_page.demo_button  # the first thing to do, Enter does it


def test_the_next_wizard_page_gets_the_focus_not_the_page_list(window, qtbot):
    window.show()
    qtbot.waitExposed(window)
    window.go_to("New run")
    wizard = window.wizard
    assert window.focusWidget() is wizard.models_page.name  # the first field, not Next
    wizard.next()  # what Enter in the name field does: the field is hidden, Qt passed the focus to the page list
    focus = window.focusWidget()
    assert focus is not window.nav and wizard.data_page.isAncestorOf(focus)
    window.go_to("Monitor")
    assert window.monitor.isAncestorOf(window.focusWidget())


def test_a_long_run_title_and_selector_entry_do_not_widen_the_window(window, qtbot):
    from studio.model.run_state import RunState
    from studio.run_session import RunSession

    window.resize(1024, 700)
    window.show()
    qtbot.waitExposed(window)
    window.go_to("Monitor")
    state = RunState()
    state.run_id = "20261201-140002-demo-quick-with-a-long-name-80a5"
    state.state = "failed"
    window.monitor.add_session(RunSession("demo-quick-with-a-long-name (resumed) " * 2, state=state))
    window.monitor.refresh()
    qtbot.wait(50)
    assert window.width() == 1024 and window.monitor.minimumSizeHint().width() <= 1024 - 150
    assert window.monitor.title.is_elided() and "80a5" in window.monitor.title.text()


def test_deleted_runs_take_their_curves_with_them(qtbot, home):
    from engine.contract.runs import RunStore
    from studio.widgets.history import HistoryView

    store = RunStore()
    paths = _finished_run(store, "kd", {"models": {"kd_student": {"rougeL": 0.4}}})
    (paths.root / "events.jsonl").write_text(
        _event("metric", 1, stage="student_kd", step=1, values={"train/loss": 3.0}).to_json() + "\n",
        encoding="utf-8")
    history = HistoryView(store)
    qtbot.addWidget(history)
    history.confirm = lambda parent, title, text: "with its models" in text
    history.select_run(paths.id)
    assert history.plots.store.series and history.eval_table.table.rowCount() == 1
    history.delete_button.click()
    assert store.list() == [] and not history.plots.store.series  # the curves stayed on screen
    assert history.eval_table.table.rowCount() == 0


def test_cancel_on_close_lets_the_engine_finish_cancelling_before_the_window_goes(window, qtbot, tmp_path,
                                                                                  monkeypatch):
    from engine.contract.runs import RunStore
    from studio_helpers import spec_file

    monkeypatch.setenv("FAKE_ENGINE_STEPS", "2000")
    session = window.run_spec_file(spec_file(tmp_path))
    qtbot.waitUntil(lambda: bool(session.state.metrics.series), timeout=15000)
    window.ask = lambda title, text: "cancel"
    assert not window.close()  # the engine is still saving: quitting now killed it, the run left "interrupted"
    assert "Cancelling" in window.statusBar().currentMessage()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=15000)
    assert RunStore().get(session.run_id).status == "cancelled"


def test_an_unmapped_column_is_explained_for_the_wizard_too():
    from engine.contract.data.records import RecordProblem, canonical_record

    with pytest.raises(RecordProblem) as info:
        canonical_record({"question": "What is 2+2?", "answer": "4"}, {"instruction": "question"}, default_id="1")
    assert "no column response for response" in str(info.value) and "in the wizard its column mapping" in str(
        info.value)  # the data page showed only the spec's data.columns


def test_spec_dialogs_start_where_the_wizard_saves_specs(window, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from studio.pages.review_page import specs_dir

    asked = []
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args: (asked.append(args[2]), ("", ""))[1])
    window._on_open_spec_triggered()
    window._on_run_spec_file_triggered()
    assert asked == [str(specs_dir())] * 2


def test_eval_table_shows_draft_acceptance_and_speedup_beside_retention(qtbot):
    from studio.widgets.run_panels import EvalTable

    table = EvalTable()
    qtbot.addWidget(table)
    table.show_report({"reference": "teacher", "models": {
        "teacher": {"rougeL": 0.5, "exact_match": 0.25},
        "kd_student": {"rougeL": 0.45, "exact_match": 0.2, "retention": 0.9,
                       "draft": {"acceptance": 0.612, "speedup": 1.314, "prompts": 8}}}})
    headers = [table.table.horizontalHeaderItem(c).text() for c in range(table.table.columnCount())]
    assert headers == ["model", "ROUGE-L", "exact match", "retention", "draft acceptance", "draft speed-up"]
    assert [table.cell(1, c) for c in (3, 4, 5)] == ["90.0 %", "61.2 %", "1.31×"]
    assert [table.cell(0, c) for c in (4, 5)] == ["—", "—"]  # the reference drafts for nobody
    assert "teacher keeps" in table.table.horizontalHeaderItem(4).toolTip()
    table.show_report({"reference": "teacher", "models": {"teacher": {"rougeL": 0.5}}})  # older reports: no column
    assert table.table.columnCount() == 4
