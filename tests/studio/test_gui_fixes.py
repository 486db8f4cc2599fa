"""Defects a GUI pass found on the wizard and the window, each pinned by a test: a model picked from the source
list is read at once, and the close dialog's wording follows the number of runs."""
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
