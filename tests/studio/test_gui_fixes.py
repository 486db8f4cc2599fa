"""Defects a GUI pass found on the wizard and the window, each pinned by a test: a model picked from the source
list is read at once, the close dialog's wording follows the number of runs, and the method page's unused box is
off throughout and shows only the knobs the KD method reads, and the monitor's title is cut in the run's name,
never in its " · run id"."""
from __future__ import annotations


def test_a_model_picked_from_the_list_is_inspected_at_once(window, monkeypatch):
    from studio.arena.catalog import ModelChoice

    window.go_to("New run")
    page = window.wizard.models_page
    asked: list[str] = []
    monkeypatch.setattr(window.wizard.inspector, "inspect", asked.append)
    page.run_models = lambda: [ModelChoice("demo-quick · student_kd", "/runs/r1/student_kd/model")]
    page.refresh_run_models()
    combo = page.student.source
    index = combo.findText("demo-quick · student_kd")
    assert index >= 0
    combo.setCurrentIndex(index)
    combo.activated.emit(index)  # what a click on the list's item sends
    assert asked == ["/runs/r1/student_kd/model"]  # the folder behind the label, not the label
    assert page.student.info.text() == "Reading the configuration…"
    combo.setEditText("/typed/half/a/pa")  # typing does not start an engine per keystroke
    assert asked == ["/runs/r1/student_kd/model"]


def test_close_dialog_wording_follows_the_number_of_runs():
    from studio.window_close import close_wording

    title, text, button = close_wording(1)
    assert (title, button) == ("A run is still going", "Cancel the run") and text.startswith("A run is")
    title, text, button = close_wording(3)
    assert (title, button) == ("3 runs are still going", "Cancel the runs") and text.startswith("3 runs are")
    assert "cancel them?" in text and "cancel it?" in close_wording(1)[1]


def test_cancel_in_the_wizard_leaves_it_for_where_the_person_was(window):
    window.go_to("History")
    window.go_to("New run")
    wizard = window.wizard
    while wizard.currentPage() is not wizard.review_page:
        before = wizard.currentId()
        wizard.next()
        assert wizard.currentId() != before, wizard.currentPage().problem()
    wizard.button(wizard.WizardButton.CancelButton).click()
    assert window.current_page() == "History"  # not the wizard's Models page
    assert wizard.currentPage() is wizard.models_page  # the next visit starts afresh
    window.go_to("Start")
    window.go_to("New run")
    wizard.reject()
    assert window.current_page() == "Start"


def test_the_method_page_greys_all_of_an_unused_box_and_shows_only_the_knobs_a_kd_method_reads(window):
    from engine.contract.stage_specs import KD_METHOD_KNOBS

    window.go_to("New run")
    page = window.wizard.method_page
    page.set_method("grpo")
    assert page.kd_box.title() == "Distillation (not used)"
    for widget in (page.with_teacher_sft, page.with_baseline, page.divergence, page.alpha, page.temperature):
        assert not widget.isEnabledTo(page.kd_box)  # off on its own, not only through the greyed box
    assert "bench/" not in page.grpo_note.text() and "0 %" in page.grpo_note.text()
    assert "“Demo kit: reasoning”" in page.grpo_note.text()  # the wizard's data is the instructions kit
    window.wizard.choices.data.preset = "demo_reasoning"
    page.set_method("token_kd")
    page.set_method("grpo")
    assert "Demo kit: reasoning" not in page.grpo_note.text()
    assert "divergence" not in KD_METHOD_KNOBS["cross_tokenizer"]
    page.set_method("cross_tokenizer_kd")
    assert page.with_teacher_sft.isEnabled() and page.alpha.isEnabled()
    assert not page.kd_form.isRowVisible(page.divergence) and page.kd_form.isRowVisible(page.temperature)
    page.set_method("token_kd")
    assert page.kd_form.isRowVisible(page.divergence) and page.divergence.isEnabled()


def test_a_followed_runs_title_is_cut_in_its_name_and_keeps_the_separator_and_run_id(window, qtbot):
    from studio.model.run_state import RunState
    from studio.run_session import RunSession
    from studio.widgets.elided_label import ElidedLabel

    run_id = "20261207-103717-demo-quick-6d1f"
    window.go_to("Monitor")
    state = RunState()
    state.run_id, state.state = run_id, "running"
    window.monitor.add_session(RunSession("demo-quick-with-a-long-name (followed) " * 3, state=state))
    window.monitor.refresh()
    title = window.monitor.title
    tail = f"  ·  {run_id}"
    for width in (title.fontMetrics().horizontalAdvance("demo-q…" + tail) + 8, 2000):
        title.setFixedWidth(width)
        qtbot.wait(10)
        assert title.text().endswith(tail), width  # the separator and the whole id, not "…03717-demo-quick-6d1f"
        assert title.fontMetrics().horizontalAdvance(title.text()) <= title.contentsRect().width()
    assert not title.is_elided()  # with room for all of it, all of it
    label = ElidedLabel()  # too narrow for the id: elided as one text, never wider than the label
    label.set_full_text("demo-quick (followed)" + tail, keep_end=tail)
    label.setFixedWidth(label.fontMetrics().horizontalAdvance(run_id) // 2)
    label.show()
    qtbot.wait(10)
    assert "…" in label.text() and label.fontMetrics().horizontalAdvance(label.text()) <= label.contentsRect().width()
