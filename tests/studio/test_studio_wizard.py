"""Walk the new-run wizard like a user and check the spec it writes; pages refuse impossible values."""
from __future__ import annotations

import json

import pytest

from engine.contract.spec import SFTStage, TrainSpec, field_help, load_spec
from engine.contract.stage_specs import KD_METHOD_KNOBS
from studio.model.wizard_model import KD_METHOD, METHODS, WizardChoices, stage_dicts

pytestmark = pytest.mark.usefixtures("home")


def write_jsonl(path, rows, broken_line: str | None = None):
    lines = [json.dumps(r) for r in rows] + ([broken_line] if broken_line else [])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def wizard(window):
    window.go_to("New run")
    return window.wizard


def test_walk_the_wizard_writes_the_spec(wizard, window, tmp_path, qtbot):
    data = write_jsonl(tmp_path / "tasks.jsonl", [{"prompt": f"Add {i} and 1", "output": str(i + 1)}
                                                  for i in range(30)])
    models = wizard.models_page
    models.name.setText("wizard-run")
    models.student.source.setEditText("demo:student")
    wizard.next()
    page = wizard.data_page
    page.set_preset("local")
    page.set_path(str(data))
    assert page.columns() == {"instruction": "prompt", "response": "output"}  # guessed from the names
    assert page.table.rowCount() == 20 and page.table.item(0, 0).text() == "Add 0 and 1"
    wizard.next()
    method = wizard.method_page
    method.set_method("token_kd")
    method.divergence.setCurrentText("jsd")
    method.alpha.setValue(0.3)
    method.temperature.setValue(2.0)
    method.with_baseline.setChecked(False)
    wizard.next()
    settings = wizard.settings_page
    settings.learning_rate.setText("1e-4, 3e-4")
    settings.max_steps.setValue(7)
    settings.batch_size.setValue(2)
    settings.max_length.setValue(128)
    settings.lora.setChecked(True)
    settings.lora_r.setValue(8)
    settings.device.setCurrentText("cpu")
    settings.student_references.setValue(0.25)
    wizard.back()  # nothing is lost going back and forth
    assert method.alpha.value() == pytest.approx(0.3)
    wizard.next()
    assert settings.learning_rate.text() == "1e-4, 3e-4"
    wizard.next()
    review = wizard.review_page
    assert wizard.currentPage() is review and review.isComplete()
    assert review.command.text() == f"compression-engine run {review.spec_path}"
    spec = load_spec(review.spec_path)  # the file the command names is the spec the wizard built
    assert spec.name == "wizard-run" and spec.device == "cpu"
    assert [s.name for s in spec.stages] == ["teacher_sft", "student_kd", "eval"]
    kd = spec.stage("student_kd")
    assert (kd.teacher, kd.distill.divergence, kd.distill.alpha, kd.distill.temperature) == \
        ("teacher_sft", "jsd", 0.3, 2.0)
    assert kd.train.learning_rate == 1e-4 and kd.train.sweep_learning_rates == [1e-4, 3e-4]
    assert kd.references == 0.25 and spec.stage("teacher_sft").references == 1.0  # only the students hold fewer
    assert (kd.train.max_steps, kd.train.batch_size, kd.train.lora.enabled, kd.train.lora.r) == (7, 2, True, 8)
    assert spec.data.preset == "local" and spec.data.path == str(data) and spec.data.max_length == 128
    assert spec.data.columns == {"instruction": "prompt", "response": "output"}
    assert spec.stage("eval").models == {"teacher": "teacher_sft", "kd_student": "student_kd"}
    assert "sweep_learning_rates: [0.0001, 0.0003]" in review.yaml.toPlainText()
    saved = review.save_spec(tmp_path / "copy.json")
    assert load_spec(saved) == spec
    with qtbot.waitSignal(window.run_launched, timeout=5000):
        wizard.accept()  # Launch
    session = window.sessions[-1]
    assert session.title == "wizard-run" and window.current_page() == "Monitor"
    qtbot.waitUntil(lambda: session.state.state == "finished", timeout=20000)


def test_settings_page_refuses_impossible_values(wizard):
    for _ in range(3):
        wizard.next()
    page = wizard.settings_page
    assert page.batch_size.toolTip() == field_help(TrainSpec, "batch_size")
    page.batch_size.setValue(0)
    assert not page.validatePage()
    assert "train.batch_size: must be > 0, got 0." in page.error_label.text()
    page.batch_size.setValue(4)
    page.learning_rate.setText("1e-4, -2")
    assert not page.validatePage() and "sweep_learning_rates[1]" in page.error_label.text()
    page.learning_rate.setText("3e-4")
    page.student_references.setValue(0)
    assert not page.validatePage() and "student.references" in page.error_label.text()
    page.student_references.setValue(0.1)
    assert page.validatePage() and page.error_label.isHidden()
    assert page.student_references.toolTip() == field_help(SFTStage, "references")


def test_method_page_refuses_alpha_outside_zero_one(wizard):
    wizard.next()
    wizard.next()
    page = wizard.method_page
    page.alpha.setValue(1.5)
    wizard.next()
    assert wizard.currentPage() is page  # Next refused
    assert "distill.alpha: must lie in [0, 1], got 1.5." in page.error_label.text()


def test_method_page_turns_off_what_a_method_does_not_read(wizard):
    """The boxes follow the stage kinds' table (the kinds a method runs), the distillation knobs the KD method's
    KD_METHOD_KNOBS: sequence-level KD reads no α, so its row is hidden and the spec says the default; in an unused
    box every knob is off."""
    wizard.next()
    wizard.next()
    page = wizard.method_page
    page.alpha.setValue(0.3)  # under token KD, the default method
    for key in METHODS:
        page.set_method(key)
        kinds = {s["kind"] for s in stage_dicts(WizardChoices(method=key))}
        assert page.kd_box.isEnabled() == ("distill" in kinds), key
        assert page.grpo_box.isEnabled() == ("grpo" in kinds) and page.quant_box.isEnabled() == ("quantize" in kinds)
        knobs = KD_METHOD_KNOBS[KD_METHOD.get(key, "token")]
        assert [w.isEnabledTo(page.kd_box) for w in (page.divergence, page.alpha, page.temperature)] == \
            [k in knobs and "distill" in kinds for k in ("divergence", "alpha", "temperature")], key
        assert [page.kd_form.isRowVisible(w) for w in (page.divergence, page.alpha, page.temperature)] == \
            [k in knobs for k in ("divergence", "alpha", "temperature")], key  # unread knobs are not shown
    page.set_method("sequence_kd")
    wizard.next()
    wizard.next()
    spec = load_spec(wizard.review_page.spec_path)
    kd = spec.stage("student_kd").distill
    assert (kd.method, kd.alpha) == ("sequence", 0.5)  # the α it does not read is not written (it would be refused)


def test_data_page_reports_a_bad_file_at_its_line(wizard, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "output": "b"}, {"prompt": "c", "output": "d"}],
                      broken_line='{"prompt": "e", "output"')
    wizard.next()
    page = wizard.data_page
    page.set_preset("local")
    page.set_path(str(bad))
    wizard.next()
    assert wizard.currentPage() is page
    assert f"{bad}:3: not valid JSON" in page.error_label.text()
    page.set_preset("demo")
    wizard.next()
    assert wizard.currentPage() is wizard.method_page


def test_models_page_shows_inspected_models(wizard, qtbot):
    page = wizard.models_page
    page.teacher.source.setEditText("demo:teacher")
    page.student.source.setEditText("demo:student")
    page.inspect_button.click()
    qtbot.waitUntil(lambda: "Same vocabulary" in page.compat.text(), timeout=15000)
    assert "3.5 M parameters" in page.teacher.info.text() and "500.0 k" in page.student.info.text()
    page.teacher.source.setEditText("   ")
    assert not page.validatePage() and "teacher" in page.error_label.text()
