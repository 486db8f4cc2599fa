"""History's "Export GGUF…": enabled only for runs with a full-precision model, and the dialog drives the
engine's export command (a fake engine here; tests/engine/export/test_gguf_export.py covers the real one)."""
from __future__ import annotations

import json

from engine.contract.runs import RunStore


def _run_with_models(home, *, quantized_only: bool = False):
    store = RunStore()
    paths = store.create("kd", "name: kd\n")
    store.update(paths.id, status="finished")
    for stage, config in (("student_4bit", {"quantization_config": {"quant_method": "bitsandbytes"}}),
                          ("kd_student", {"architectures": ["Qwen2ForCausalLM"]})):
        if quantized_only and stage == "kd_student":
            continue
        folder = paths.model(stage)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config))
    return store, paths


def test_export_dialog_runs_the_engine_export_of_the_selected_run(qtbot, home, fake_launcher):
    from studio.widgets.export_dialog import ExportDialog
    from studio.widgets.history import HistoryView

    store, paths = _run_with_models(home)
    history = HistoryView(store)
    history.launcher = fake_launcher
    qtbot.addWidget(history)
    assert not history.export_button.isEnabled()  # nothing selected
    history.select_run(paths.id)
    assert history.export_button.isEnabled()
    history.export_button.click()
    dialog = history.findChild(ExportDialog)
    assert [dialog.model_combo.itemText(i) for i in range(dialog.model_combo.count())] == ["kd_student"]
    dialog.format_boxes["q4_k_m"].setChecked(True)
    dialog.modelfile_box.setChecked(False)
    out = home / "exports"
    dialog.out_edit.setText(str(out))
    assert dialog.arguments() == ["export", f"{paths.id}:kd_student", "--format", "f16,q8_0,q4_k_m", "--out",
                                  str(out), "--name", "kd-kd_student", "--no-modelfile"]
    dialog.overwrite_box.setChecked(True)  # off by default: the engine never replaces a file unasked
    assert dialog.arguments()[-1] == "--overwrite"
    dialog.overwrite_box.setChecked(False)
    with qtbot.waitSignal(dialog.export_button.clicked, timeout=1000):
        dialog.export_button.click()
    qtbot.waitUntil(lambda: dialog.client is not None and dialog.client.terminal, timeout=20000)
    assert "kd-kd_student-q4_k_m.gguf" in dialog.status_label.text()
    assert sorted(p.name for p in out.iterdir()) == ["kd-kd_student-f16.gguf", "kd-kd_student-q4_k_m.gguf",
                                                     "kd-kd_student-q8_0.gguf"]
    assert dialog.progress.value() == 1 and dialog.export_button.isEnabled()


def test_export_is_disabled_for_a_run_with_only_a_4bit_model(qtbot, home):
    from studio.widgets.history import HistoryView

    store, paths = _run_with_models(home, quantized_only=True)
    history = HistoryView(store)
    qtbot.addWidget(history)
    history.select_run(paths.id)
    assert history.open_button.isEnabled() and not history.export_button.isEnabled()


def test_a_long_report_grows_the_dialog_and_each_missing_format_says_why(qtbot, home):
    from studio.widgets.export_dialog import ExportDialog

    store, paths = _run_with_models(home)
    dialog = ExportDialog(store.get(paths.id))
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    heights = {fmt: box.height() for fmt, box in dialog.format_boxes.items()}
    install = ("q4_k_m needs llama.cpp's quantizer, which is not installed; install it with "
               "`pip install llama-cpp-python` (or put llama-quantize on PATH) and export again.")
    dialog._on_client_failed(install + " " + install, "")
    qtbot.wait(50)  # the layout settles
    assert all(box.height() >= box.sizeHint().height() for box in dialog.format_boxes.values())
    assert {fmt: box.height() for fmt, box in dialog.format_boxes.items()} == heights
    assert dialog.status_label.height() >= dialog.status_label.heightForWidth(dialog.status_label.width())
    dialog._asked = ["f16", "q8_0", "q4_k_m"]
    dialog._on_client_finished("finished", {"files": {"f16": "/x/kd-f16.gguf", "q8_0": "/x/kd-q8_0.gguf"},
                                            "bytes": {"f16": 2_000_000, "q8_0": 1_000_000},
                                            "skipped": {"q4_k_m": install}})
    lines = dialog.status_label.text().splitlines()
    assert lines[1:] == ["✓ f16: kd-f16.gguf (2.0 MB)", "✓ q8_0: kd-q8_0.gguf (1.0 MB)",
                         f"✗ q4_k_m not written: {install}"]
