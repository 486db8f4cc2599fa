"""The wizard as a person types into it: defaults are valid, typing is never lost while Next switches on and off (the
focus stays in the field), a disabled Next says why, per-stage training settings reach the spec, the review page's
YAML is editable and flows back into the pages, File → Open spec fills the wizard, Enter presses Next."""
from __future__ import annotations

import pytest
import yaml
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QWizard

from engine.contract.spec import dump_spec, load_spec, stage_kind

pytestmark = pytest.mark.usefixtures("home")
NEXT = QWizard.WizardButton.NextButton


@pytest.fixture
def wizard(window, qtbot):
    window.go_to("New run")
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=3000)
    return window.wizard


def _type_into(qtbot, field, text: str) -> None:
    """Select everything, delete it, type ``text`` key by key (as a person does)."""
    field.setFocus()
    qtbot.keyClick(field, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClick(field, Qt.Key.Key_Backspace)
    qtbot.keyClicks(field, text)


def test_defaults_enable_next_on_every_page(wizard):
    for _ in range(4):
        assert wizard.button(NEXT).isEnabled(), wizard.currentPage().title()
        assert wizard.currentPage().error_label.isHidden()
        wizard.next()
    assert wizard.currentPage() is wizard.review_page and wizard.review_page.isComplete()


def test_typing_keeps_focus_while_next_switches(wizard, qtbot):
    name = wizard.models_page.name
    name.setFocus()
    qtbot.keyClick(name, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClick(name, Qt.Key.Key_Backspace)
    assert not wizard.button(NEXT).isEnabled()  # an empty name: Next off, and the page says why
    assert "name: is empty" in wizard.models_page.error_label.text()
    assert not wizard.models_page.error_label.isHidden()
    assert "name: is empty" in wizard.button(NEXT).toolTip()
    assert QApplication.focusWidget() is name
    qtbot.keyClicks(name, "gui-kd-1")  # Next switches on at the first key: the rest must still arrive
    assert name.text() == "gui-kd-1" and QApplication.focusWidget() is name
    assert wizard.button(NEXT).isEnabled() and wizard.models_page.error_label.isHidden()
    assert wizard.button(NEXT).toolTip() == ""
    qtbot.keyClick(name, Qt.Key.Key_Return)  # Enter presses Next
    assert wizard.currentPage() is wizard.data_page and wizard.choices.name == "gui-kd-1"
    wizard.next()
    wizard.next()
    rate = wizard.settings_page.learning_rate
    _type_into(qtbot, rate, "3e-4, -1")  # valid, invalid, valid… at every key
    assert QApplication.focusWidget() is rate and rate.text() == "3e-4, -1"
    assert not wizard.button(NEXT).isEnabled()
    assert "sweep_learning_rates[1]: must be > 0, got -1.0" in wizard.settings_page.error_label.text()
    qtbot.keyClick(rate, Qt.Key.Key_Backspace)
    qtbot.keyClick(rate, Qt.Key.Key_Backspace)
    qtbot.keyClicks(rate, "1e-3")
    assert rate.text() == "3e-4, 1e-3" and wizard.button(NEXT).isEnabled()
    assert QApplication.focusWidget() is rate


def test_per_stage_settings_reach_the_spec(wizard, qtbot):
    wizard.next()
    wizard.next()
    wizard.method_page.set_method("pipeline")
    wizard.next()
    page = wizard.settings_page
    page.shared.max_steps.setValue(30)
    assert page.stage_tabs.isHidden()
    page.same_for_all.setChecked(False)  # each stage starts from the shared settings
    assert not page.stage_tabs.isHidden() and page.shared.isHidden()
    forms = page.stage_forms
    assert forms["grpo"].max_steps.value() == 30
    _type_into(qtbot, forms["teacher_sft"].learning_rate, "1e-4")
    forms["teacher_sft"].epochs.setValue(3)
    forms["teacher_sft"].max_steps.setValue(0)
    _type_into(qtbot, forms["student_kd"].learning_rate, "5e-4")
    forms["student_kd"].scheduler.setCurrentText("linear")
    _type_into(qtbot, forms["grpo"].learning_rate, "1e-6")
    forms["grpo"].batch_size.setValue(0)
    assert not wizard.button(NEXT).isEnabled()
    assert page.error_label.text() == "⚠  GRPO: train.batch_size: must be > 0, got 0."
    forms["grpo"].batch_size.setValue(4)
    assert wizard.button(NEXT).isEnabled()
    wizard.next()
    spec = load_spec(wizard.review_page.spec_path)
    trains = {s.name: s.train for s in spec.stages if stage_kind(s).trains}
    assert (trains["teacher_sft"].learning_rate, trains["teacher_sft"].epochs, trains["teacher_sft"].max_steps) \
        == (1e-4, 3.0, 0)
    assert (trains["student_kd"].learning_rate, trains["student_kd"].scheduler) == (5e-4, "linear")
    assert (trains["grpo"].learning_rate, trains["grpo"].batch_size, trains["grpo"].max_steps) == (1e-6, 4, 30)
    assert trains["student_sft"].learning_rate == 1e-3  # untouched: the shared value


def test_yaml_edits_flow_back_into_the_pages(wizard, qtbot):
    for _ in range(4):
        wizard.next()
    review = wizard.review_page
    text = review.yaml.toPlainText()
    assert "name: my-run" in text and "alpha" not in text  # the defaults are left out: the spec reads as written
    text = text.replace("  teacher: teacher_sft\n", "  teacher: teacher_sft\n  distill: {alpha: 0.2}\n", 1)
    review.yaml.setPlainText(text.replace("name: my-run", "name: edited-run", 1))
    assert review.apply_yaml() and review.isComplete()
    assert wizard.models_page.name.text() == "edited-run"
    assert wizard.method_page.alpha.value() == pytest.approx(0.2)
    assert load_spec(review.spec_path).stage("student_kd").distill.alpha == 0.2  # the command's file follows
    # a refusal: the spec's own sentence with its line; Launch is off until it is fixed
    lines = review.yaml.toPlainText().splitlines()
    at = next(i for i, line in enumerate(lines) if "alpha: 0.2" in line)  # student_kd's distill block
    lines[at] = lines[at].replace("alpha: 0.2", "alpha: 0.2, temperature: -2")
    review.yaml.setPlainText("\n".join(lines))
    assert not review.apply_yaml() and not review.isComplete()
    assert f"line {at + 1}: distill.temperature: must be > 0, got -2" in review.error_label.text()
    assert review.yaml.extraSelections()[0].cursor.blockNumber() == at
    review.yaml.setPlainText(review.yaml.toPlainText().replace("temperature: -2", "temperature: 2.0"))
    assert review.apply_yaml() and review.error_label.isHidden()
    review.yaml.setFocus()  # typing in the editor: the edit is read when the typing pauses, the focus stays
    review.yaml.moveCursor(review.yaml.textCursor().MoveOperation.End)
    qtbot.keyClick(review.yaml, Qt.Key.Key_Return)
    qtbot.keyClicks(review.yaml, "# tried T=2")
    qtbot.waitUntil(lambda: not review._reparse.isActive(), timeout=3000)
    assert QApplication.focusWidget() is review.yaml and review.yaml.toPlainText().endswith("# tried T=2")
    assert review.isComplete() and wizard.button(QWizard.WizardButton.FinishButton).isEnabled()
    for _ in range(4):
        wizard.back()
    assert wizard.currentPage() is wizard.models_page and wizard.models_page.name.text() == "edited-run"
    for _ in range(4):
        wizard.next()
    spec = load_spec(review.spec_path)  # walked through the pages: the edits are still there
    assert spec.name == "edited-run" and spec.stage("student_kd").distill.temperature == 2.0


def test_open_spec_fills_the_wizard(window, wizard, tmp_path):
    for _ in range(2):
        wizard.next()
    wizard.method_page.set_method("pipeline")
    wizard.next()
    wizard.settings_page.same_for_all.setChecked(False)
    wizard.settings_page.stage_forms["grpo"].learning_rate.setText("2e-6")
    wizard.next()
    spec = load_spec(wizard.review_page.spec_path)
    spec.name = "from-a-file"
    spec.stage("teacher_sft").train.warmup_ratio = 0.2  # a setting no page shows survives the round trip
    path = tmp_path / "saved.yaml"
    dump_spec(spec, path)
    window.go_to("Start")
    wizard.restart()
    assert window.open_spec(path)
    assert window.current_page() == "New run" and wizard.currentPage() is wizard.review_page
    assert wizard.models_page.name.text() == "from-a-file" and wizard.method_page.method() == "pipeline"
    assert not wizard.settings_page.same_for_all.isChecked()
    assert wizard.settings_page.stage_forms["grpo"].learning_rate.text() == "2e-06"
    assert load_spec(wizard.review_page.spec_path) == spec
    warnings = []
    window.warn = lambda title, text: warnings.append(text)
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text() + "device: toaster\n")  # auto, the default, is not written
    assert not window.open_spec(bad)
    assert warnings == [f"{bad}: device: 'toaster' is not one of auto, cuda, mps, cpu."]
    assert wizard.models_page.name.text() == "from-a-file"  # nothing was changed


def test_a_spec_written_by_an_older_version_opens_and_says_what_it_ignores(window, wizard, tmp_path):
    """Older versions dumped every block into every stage; such a file opens, the review page shows the compact
    spec and one sentence per stage naming what was ignored."""
    from engine.contract.spec import STAGE_KIND_TABLE, to_dict
    from engine.demo.pipeline import demo_spec

    spec = demo_spec(quick=True)
    every: dict = {}
    for row in STAGE_KIND_TABLE.values():
        every.update(to_dict(row.stage_class()))
    old = {**to_dict(spec), "stages": [{**every, **to_dict(s)} for s in spec.stages]}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(old, sort_keys=False), encoding="utf-8")
    assert window.open_spec(path)
    review = wizard.review_page
    assert wizard.currentPage() is review and load_spec(review.spec_path) == spec
    notes = review.notes.text().splitlines()
    assert review.notes.isVisibleTo(review) and len(notes) == len(spec.stages)
    assert notes[0].startswith("stage 'teacher_sft' (sft): ignoring ") and "distill" in notes[0]
    assert "alpha" not in review.yaml.toPlainText()  # the compact spec: what the file meant
    wizard.restart_fresh()
    assert review.notes.text() == "" and not review.notes.isVisibleTo(review)


def test_precision_and_qlora_reach_the_spec_and_pure_bf16_is_warned(wizard):
    wizard.next()
    wizard.next()
    wizard.next()
    page = wizard.settings_page
    assert page.precision.currentText() == "auto"
    page.precision.setCurrentText("bf16-pure")
    assert page.precision_hint.text().startswith("warning:")
    page.lora.setChecked(True)
    page.qlora.setChecked(True)
    wizard.next()
    spec = load_spec(wizard.review_page.spec_path)
    trains = [s.train for s in spec.stages if stage_kind(s).trains]
    assert trains and all(t.precision == "bf16-pure" and t.lora.quantized_base for t in trains)
