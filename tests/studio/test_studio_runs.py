"""Runs in the window: launch (fake engine), live curves, cancel, crash and kill, restart, history, re-attach."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from studio_helpers import spec_file, until

from engine.contract.protocol import Event
from engine.contract.runs import RunStore

pytestmark = pytest.mark.usefixtures("home")


def test_partial_lines_are_buffered_until_their_newline(qtbot, fake_launcher):
    from studio.engine_client import EngineClient

    client = EngineClient(fake_launcher)
    got = []
    client.metric_received.connect(lambda stage, step, values: got.append((stage, step, values)))
    line = Event("metric", {"stage": "kd", "step": 4, "values": {"kd/ce": 0.5}}, "r", 1).to_json().encode()
    client.feed_stdout(line[:17])
    assert got == []
    client.feed_stdout(line[17:] + b"\nnot json\n" + line[:5])
    assert got == [("kd", 4, {"kd/ce": 0.5})]
    assert "[stdout] not json" in client.log_lines  # a stray print is kept in the log, never fatal
    assert client.run_id == "r"


def test_launched_run_streams_curves_and_finishes(window, qtbot, tmp_path):
    session = window.run_spec_file(spec_file(tmp_path, "  - {kind: sft, name: student_sft, model: student}\n"
                                             "  - {kind: evaluate, name: eval, models: {teacher: teacher, "
                                             "kd_student: student}}\n"))
    with qtbot.waitSignal(session.run_ended, timeout=20000) as ended:
        pass
    assert ended.args == ["finished"]
    monitor = window.monitor
    monitor.refresh()
    monitor.plots.refresh()
    x, y = monitor.plots.curve_data("student_sft · train/loss")
    assert list(x) == list(range(1, 13)) and y[-1] < y[0]  # 12 steps, the loss went down
    assert "Loss · CE · divergence" in monitor.plots.plot_titles()
    assert monitor.badge.text() == "finished" and monitor.progress.bar.value() == 1000
    assert monitor.eval_table.cell(1, 0) == "kd_student" and monitor.eval_table.cell(1, 3) == "91.7 %"
    record = RunStore().get(session.run_id)
    assert record.status == "finished"
    assert any("fake engine: starting" in line for line in session.state.log)  # stderr is the log


def test_cancel_asks_the_engine_on_stdin(window, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_STEPS", "2000")
    session = window.run_spec_file(spec_file(tmp_path))
    qtbot.waitUntil(lambda: bool(session.state.metrics.series), timeout=15000)
    window.monitor.cancel_button.click()
    qtbot.waitUntil(lambda: not session.live, timeout=15000)
    assert session.state.state == "cancelled"
    assert RunStore().get(session.run_id).status == "cancelled"


def test_cancel_escalates_to_terminate_when_ignored(qtbot, home, fake_launcher, tmp_path, monkeypatch):
    from studio.engine_client import EngineClient

    monkeypatch.setenv("FAKE_ENGINE_MODE", "ignore_cancel")
    monkeypatch.setenv("FAKE_ENGINE_STEPS", "5000")
    client = EngineClient(fake_launcher)
    failed = []
    client.run_failed.connect(lambda message, log: failed.append(message))
    with qtbot.waitSignal(client.run_started, timeout=15000):
        client.start("run", str(spec_file(tmp_path)))
    client.cancel(grace_ms=300, terminate_grace_ms=2000)
    qtbot.waitUntil(lambda: bool(failed), timeout=10000)
    assert not client.running
    assert any("terminating" in line for line in client.log_lines)


def test_crash_turns_the_run_red_and_the_window_keeps_working(window, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_MODE", "crash")
    session = window.run_spec_file(spec_file(tmp_path, name="crashy"))
    qtbot.waitUntil(lambda: session.state.state == "failed", timeout=15000)
    window.monitor.refresh()
    # no done event and run.json still says running: the contract calls it interrupted, so does the monitor
    assert window.monitor.badge.text() == "interrupted" and window.monitor.error_banner.isVisible()
    assert "exited with code 1" in session.state.last_error
    assert any("fake crash" in line for line in session.state.log)  # the engine's last words
    monkeypatch.delenv("FAKE_ENGINE_MODE")
    again = window.run_spec_file(spec_file(tmp_path, name="after"))  # the window is still usable
    qtbot.waitUntil(lambda: again.state.state == "finished", timeout=15000)


def test_a_refused_spec_fails_with_the_engines_sentence(window, qtbot, tmp_path):
    session = window.run_spec_file(tmp_path / "missing.yaml")
    qtbot.waitUntil(lambda: session.state.state == "failed", timeout=15000)
    assert "cannot read the spec file" in session.state.last_error
    assert any("exited with code 2" in line for line in session.state.log) and session.run_id == ""


def test_killed_engine_is_reported_failed(window, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_STEPS", "5000")
    session = window.run_spec_file(spec_file(tmp_path))
    qtbot.waitUntil(lambda: bool(session.state.metrics.series), timeout=15000)
    os.kill(session.source.pid, 9)  # as the OOM killer would
    qtbot.waitUntil(lambda: session.state.state == "failed", timeout=10000)
    assert "killed or crashed" in session.state.last_error
    window.monitor.refresh()
    assert window.monitor.error_banner.isVisible() and not window.monitor.cancel_button.isEnabled()
    window.go_to("New run")
    assert window.wizard.validateCurrentPage()  # still responsive


def test_restart_shows_the_finished_run_with_its_curves(window, qtbot, tmp_path, fake_launcher):
    from studio.main_window import MainWindow
    from studio.model.app_settings import StudioSettings

    first = window.run_spec_file(spec_file(tmp_path, name="first"))
    qtbot.waitUntil(lambda: first.state.state == "finished", timeout=15000)
    second = window.run_spec_file(spec_file(tmp_path, name="second"))
    qtbot.waitUntil(lambda: second.state.state == "finished", timeout=15000)
    window.close()
    restarted = MainWindow(StudioSettings(), fake_launcher)
    qtbot.addWidget(restarted)
    history = restarted.history
    assert [(r.name, r.status) for r in history.records] == [("second", "finished"), ("first", "finished")]
    assert history.table.item(1, 1).text() == "finished"
    history.select_run(first.run_id)
    assert history.plots.store.series["student_sft · train/loss"].size == 12
    history.select_run(second.run_id, add=True)  # overlay two runs
    labels = set(history.plots.store.series)
    assert {"first · student_sft · train/loss", "second · student_sft · train/loss"} <= labels
    history.select_run(first.run_id)
    reopened = restarted.open_run(history.selected_records()[0])
    assert reopened.state.state == "finished" and not reopened.live
    assert reopened.state.metrics.series["student_sft · train/loss"].size == 12


def test_rerun_and_delete_after_confirmation(window, qtbot, tmp_path):
    first = window.run_spec_file(spec_file(tmp_path, name="orig"))
    qtbot.waitUntil(lambda: first.state.state == "finished", timeout=15000)
    record = RunStore().get(first.run_id)
    again = window.rerun(record)
    qtbot.waitUntil(lambda: again.state.state == "finished", timeout=15000)
    assert again.run_id != first.run_id
    assert (RunStore().paths(again.run_id).spec.read_text() == RunStore().paths(first.run_id).spec.read_text())
    history = window.history
    history.records = []
    history.refresh()
    history.select_run(first.run_id)
    history.confirm = lambda *args: False
    history.delete_button.click()
    assert first.run_id in {r.id for r in RunStore().list()}
    history.confirm = lambda *args: True
    history.delete_button.click()
    assert first.run_id not in {r.id for r in RunStore().list()}
    assert [r.id for r in history.records] == [again.run_id]


def test_restart_follows_a_run_still_going(qtbot, home, tmp_path, fake_launcher, monkeypatch):
    from studio.main_window import MainWindow
    from studio.model.app_settings import StudioSettings

    env = {**os.environ, "FAKE_ENGINE_STEPS": "150", "FAKE_ENGINE_DELAY": "0.04"}
    proc = subprocess.Popen([sys.executable, fake_launcher.entry[0], "run", str(spec_file(tmp_path))],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        assert until(lambda: any(r.status == "running" for r in RunStore().list()), timeout=15)
        window = MainWindow(StudioSettings(), fake_launcher)  # a studio started while the run goes on
        qtbot.addWidget(window)
        assert len(window.sessions) == 1, [r.status for r in RunStore().list()]
        assert window.current_page() == "Monitor"
        session = window.sessions[0]
        assert session.title.endswith("(followed)")
        qtbot.waitUntil(lambda: session.state.state == "finished", timeout=20000)
        assert session.state.metrics.series["student_sft · train/loss"].size == 150
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)


def test_the_studio_never_imports_the_ml_stack():
    code = ("import sys, json; import studio.app, studio.main_window, studio.pages.wizard; "
            "from PySide6.QtWidgets import QApplication; app = QApplication([]); "
            "from studio.main_window import MainWindow; w = MainWindow(); w.go_to('History'); w.go_to('New run'); "
            "print(json.dumps(sorted(sys.modules)))")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    modules = set(json.loads(out.stdout.strip().splitlines()[-1]))
    heavy = {"torch", "transformers", "trl", "peft", "datasets", "bitsandbytes", "accelerate"}
    assert not heavy & {m.split(".")[0] for m in modules}
    engine_modules = {m for m in modules if m.startswith("engine")}
    assert "engine.contract.spec" in engine_modules  # the check sees the studio's engine imports at all
    assert {m for m in engine_modules if m not in ("engine", "engine.contract")
            and not m.startswith("engine.contract.")} == set()
