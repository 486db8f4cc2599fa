"""A run's life outside one window: resume from the monitor and the history, views that follow the run folders
(whatever changed them), runs in their own session, the 4-bit report, and the whole-run progress."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from studio_helpers import spec_file

from engine.contract.protocol import Event
from engine.contract.runs import RunStore

pytestmark = pytest.mark.usefixtures("home")
FIXTURES = Path(__file__).with_name("fixtures")


def _crashed_run(window, qtbot, tmp_path, monkeypatch, name: str = "crashy"):
    monkeypatch.setenv("FAKE_ENGINE_MODE", "crash")
    session = window.run_spec_file(spec_file(tmp_path, name=name))
    qtbot.waitUntil(lambda: session.state.state == "failed", timeout=15000)
    monkeypatch.delenv("FAKE_ENGINE_MODE")
    return session


def test_resume_from_the_monitor_ends_finished_with_one_curve(window, qtbot, tmp_path, monkeypatch):
    session = _crashed_run(window, qtbot, tmp_path, monkeypatch)
    monitor = window.monitor
    monitor.refresh()
    # one status everywhere: the engine died without saying so, and the monitor says what the history says
    assert monitor.resume_button.isVisibleTo(monitor) and monitor.badge.text() == "interrupted"
    assert "The run was interrupted" in monitor.error_banner.text()
    x_before = list(session.state.metrics.series["student_sft · train/loss"].x)
    assert x_before == list(range(1, 8))  # crashed at step 8, after the checkpoint of step 6
    qtbot.mouseClick(monitor.resume_button, qtbot_left())
    assert session.live  # the same session, a new engine: `run --resume RUN_ID`
    qtbot.waitUntil(lambda: session.state.state == "finished", timeout=15000)
    monitor.refresh()
    assert monitor.badge.text() == "finished" and not monitor.error_banner.isVisible()
    assert not monitor.resume_button.isVisibleTo(monitor)
    assert monitor.progress.bar.value() == 1000 and monitor.progress.run_bar.value() == 1000
    x = list(session.state.metrics.series["student_sft · train/loss"].x)
    assert x == list(range(1, 13))  # step 7 of the lost attempt was replaced, not drawn twice
    assert RunStore().get(session.run_id).status == "finished"
    assert len(window.sessions) == 1 and monitor.selector.currentText() == "crashy (resumed)"


def test_resume_from_the_history_for_an_interrupted_run(window, qtbot, tmp_path, monkeypatch):
    session = _crashed_run(window, qtbot, tmp_path, monkeypatch)
    record = RunStore().get(session.run_id)
    assert record.status == "running"  # the engine died without saying so: the history calls it interrupted
    history = window.history
    history.records = []
    history.refresh()
    history.select_run(session.run_id)
    assert history.table.item(0, 1).text() == "interrupted" and history.resume_button.isEnabled()
    history.resume_button.click()
    qtbot.waitUntil(lambda: session.state.state == "finished", timeout=15000)
    qtbot.waitUntil(lambda: history.table.item(0, 1).text() == "finished", timeout=5000)  # the watcher
    assert not history.resume_button.isEnabled()
    assert "finished" in history.resume_button.toolTip()


def test_a_dead_run_reopened_is_failed_and_resumable_after_a_restart(window, qtbot, tmp_path, monkeypatch,
                                                                    fake_launcher):
    from studio.main_window import MainWindow
    from studio.model.app_settings import StudioSettings

    session = _crashed_run(window, qtbot, tmp_path, monkeypatch)
    window.close()
    restarted = MainWindow(StudioSettings(), fake_launcher)
    qtbot.addWidget(restarted)
    assert restarted.current_page() == "Start"
    assert "failed" not in restarted.statusBar().currentMessage()  # nothing *ended* at start-up
    monitor = restarted.monitor  # shows the newest run, complete, without being asked
    reopened = restarted.sessions[0]
    assert reopened.run_id == session.run_id and reopened.state.state == "failed"
    assert "stopped without finishing" in reopened.state.last_error
    monitor.refresh()
    assert monitor.resume_button.isVisibleTo(monitor) and not monitor.cancel_button.isVisibleTo(monitor)
    assert "Resume continues it from its last checkpoint" in monitor.error_banner.text()
    assert reopened.state.metrics.series["student_sft · train/loss"].size == 7


def test_views_follow_a_run_resumed_from_the_command_line(window, qtbot, tmp_path, monkeypatch, fake_launcher):
    session = _crashed_run(window, qtbot, tmp_path, monkeypatch)
    history = window.history
    history.records = []
    history.refresh()
    history.select_run(session.run_id)
    assert history.plots.store.series["student_sft · train/loss"].size == 7
    subprocess.run([sys.executable, fake_launcher.entry[0], "run", "--resume", session.run_id],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=60, check=True)
    # nobody reselects anything: the watcher notices the folder changed
    qtbot.waitUntil(lambda: session.state.state == "finished", timeout=5000)
    assert list(session.state.metrics.series["student_sft · train/loss"].x) == list(range(1, 13))
    qtbot.waitUntil(lambda: history.plots.store.series["student_sft · train/loss"].size == 12, timeout=5000)
    assert history.table.item(0, 1).text() == "finished"
    assert window.statusBar().currentMessage() == "crashy: finished"
    assert window.start_page.recent.text() == "1 run in the history."


def test_a_run_started_elsewhere_is_followed_and_counted(window, qtbot, tmp_path, fake_launcher, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_STEPS", "60")
    monkeypatch.setenv("FAKE_ENGINE_DELAY", "0.05")
    proc = subprocess.Popen([sys.executable, fake_launcher.entry[0], "run", str(spec_file(tmp_path, name="cli"))],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        qtbot.waitUntil(lambda: len(window.sessions) == 1, timeout=15000)
        session = window.sessions[0]
        assert session.title == "cli (followed)" and session.live
        assert "still running" in window.start_page.recent.text()
        qtbot.waitUntil(lambda: session.state.state == "finished", timeout=20000)
        assert session.state.metrics.series["student_sft · train/loss"].size == 60
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)


def test_a_follower_reads_past_an_earlier_attempts_failure(qtbot, tmp_path):
    from studio.engine_client import RunFollower

    path = tmp_path / "events.jsonl"
    lines = [Event("hello", {"pid": 11}, "r", 1), Event("error", {"message": "boom"}, "r", 2),
             Event("done", {"status": "failed"}, "r", 3), Event("hello", {"pid": os.getpid()}, "r", 4),
             Event("metric", {"stage": "s", "step": 1, "values": {"train/loss": 1.0}}, "r", 5)]
    path.write_text("".join(e.to_json() + "\n" for e in lines))
    follower = RunFollower("r", path, os.getpid())
    ended = []
    follower.run_failed.connect(lambda *a: ended.append(a))
    follower.start()
    assert not follower.terminal and not ended and follower.last_error == ""
    follower._timer.stop()


def test_the_engine_runs_in_a_session_of_its_own(qtbot, fake_launcher, tmp_path, monkeypatch):
    from studio.engine_client import EngineClient

    monkeypatch.setenv("FAKE_ENGINE_STEPS", "2000")
    client = EngineClient(fake_launcher)
    with qtbot.waitSignal(client.run_started, timeout=15000):
        client.start("run", str(spec_file(tmp_path)))
    try:
        assert os.getsid(client.pid) == client.pid != os.getsid(0)  # no SIGHUP/SIGINT from our terminal
    finally:
        client.kill()
        qtbot.waitUntil(lambda: not client.running, timeout=5000)


def _quant_report() -> dict:
    report = json.loads((FIXTURES / "quant_eval.json").read_text())
    quant = report["quantization"]["quantize"]
    quant["original"]["scores"]["rougeL"], quant["quantized"]["scores"]["rougeL"] = 0.5, 0.45
    quant["retention"]["rougeL"] = 0.9
    return report


def test_the_4bit_report_in_the_evaluation_table(qtbot):
    from studio.widgets.run_panels import EvalTable

    table = EvalTable()
    qtbot.addWidget(table)
    table.show_report(_quant_report())  # a real quantize stage's report (demo student), one score edited
    quant = table.quant
    rows = {quant.cell(r, 0): [quant.cell(r, c) for c in (1, 2, 3)] for r in range(quant.table.rowCount())}
    assert rows["size on disk"] == ["1.94 MB", "0.94 MB", "0.484"]  # as eval.md says
    assert rows["decode tokens/s"] == ["222.0", "110.8", "0.499"]
    assert rows["ROUGE-L"] == ["0.5000", "0.4500", "90.0 % retained"]
    assert rows["exact match"][2] == "—"  # no retention of a zero score
    assert "14 linear layers in 4 bits" in quant.caption.text() and "nf4" in quant.caption.text()
    assert table.caption.text() == "No model comparison in this run."
    table.show_report(copy.deepcopy({"models": {}}))
    assert not quant.has_report and table.caption.text() == "No evaluation yet."


def test_a_partial_4bit_report_shows_what_is_known(qtbot):
    """Issue 22: sizes are published at once, quality later (or never, after a cancel): the table shows the
    rows already measured and the caption says which parts are still to come or were not measured."""
    from studio.widgets.run_panels import EvalTable

    full = _quant_report()["quantization"]["quantize"]
    sizes_only = {k: v for k, v in full.items() if k not in ("retention", "ratios")}
    sizes_only["original"] = {k: full["original"][k] for k in ("disk_bytes", "linear_bytes")}
    sizes_only["quantized"] = {k: full["quantized"][k] for k in ("disk_bytes", "linear_bytes",
                                                                 "layers_4bit")}
    sizes_only.update(measured=["size"], state="measuring", ratios={"disk_bytes": 0.484},
                      quality_plan="quality: 8 of 200 held-out samples × 2 model(s), about 9 min")
    table = EvalTable()
    qtbot.addWidget(table)
    table.show_report({"quantization": {"quantize": copy.deepcopy(sizes_only)}})
    quant = table.quant
    labels = [quant.cell(r, 0) for r in range(quant.table.rowCount())]
    assert labels == ["size on disk", "linear-layer weights"] and quant.cell(0, 3) == "0.484"
    assert "still being measured: speed and memory, quality" in quant.caption.text()
    assert "quality: 8 of 200 held-out samples" in quant.caption.text()
    table.show_report({"quantization": {"quantize": {**sizes_only, "state": "cancelled"}}})
    assert "not measured (cancelled): speed and memory, quality" in table.quant.caption.text()
    table.show_report({"models": {"teacher": {"rougeL": 0.5, "exact_match": 0.1, "retention": 1.0}},
                       "reference": "teacher", "models_pending": ["kd"], "evaluation_state": "cancelled"})
    assert table.table.rowCount() == 1 and "not measured (cancelled): kd" in table.caption.text()


def test_a_running_quantization_shows_the_part_of_its_report_already_measured(window, qtbot):
    """The monitor rereads eval.json at each 'eval' artifact while the run goes on, not only at its end."""
    store = RunStore()
    paths = store.create("quant-live", "name: quant-live\n")
    report = _quant_report()
    quant = report["quantization"]["quantize"]
    quant.update(measured=["size"], state="measuring", retention={})
    for side in ("original", "quantized"):
        quant[side].pop("scores", None)
    paths.eval_json.write_text(json.dumps(report))
    paths.events.write_text("".join(e.to_json() + "\n" for e in (
        Event("hello", {"pid": os.getpid()}, paths.id, 1),
        Event("status", {"state": "running", "stage": "quantize", "message": "stage 1/1: quantize"}, paths.id, 2),
        Event("artifact", {"stage": "quantize", "kind": "eval", "path": str(paths.eval_json)}, paths.id, 3))))
    store.update(paths.id, status="running", pid=os.getpid())  # a live engine (this process) owns it
    session = window.open_run(store.get(paths.id))
    qtbot.waitUntil(lambda: session.state.events_seen >= 3, timeout=10000)
    window.monitor.refresh()
    assert not session.state.done and window.monitor.eval_table.quant.has_report
    assert "still being measured: speed and memory, quality" in window.monitor.eval_table.quant.caption.text()


def test_a_quantization_run_shows_its_report_in_monitor_and_history(window, qtbot, tmp_path):
    store = RunStore()
    paths = store.create("quant", "name: quant\n")
    paths.events.write_text(Event("hello", {"pid": 1}, paths.id, 1).to_json() + "\n" +
                            Event("done", {"status": "finished"}, paths.id, 2).to_json() + "\n")
    paths.eval_json.write_text(json.dumps(_quant_report()))
    store.update(paths.id, status="finished")
    session = window.open_run(store.get(paths.id))
    window.monitor.refresh()
    assert session.state.state == "finished"
    assert window.monitor.eval_table.quant.has_report
    assert window.monitor.eval_table.caption.text() != "No evaluation yet."
    history = window.history
    history.records = []
    history.refresh()
    history.select_run(paths.id)
    assert history.eval_table.quant.cell(0, 0) == "size on disk"


def qtbot_left():
    from PySide6.QtCore import Qt

    return Qt.MouseButton.LeftButton


def _events(*specs) -> list[Event]:
    return [Event(kind, data, "r", seq, time) for seq, (kind, data, time) in enumerate(specs, start=1)]


def test_whole_run_progress_and_eta_from_stage_history():
    from studio.model.run_state import RunState

    state = RunState()
    for event in _events(("hello", {"pid": 1}, 0.0),
                         ("status", {"state": "running", "stage": "a", "message": "stage 1/4: sft"}, 0.0),
                         ("progress", {"stage": "a", "fraction": 0.5, "eta_s": 50.0}, 50.0)):
        state.apply(event)
    clock = state.pipeline
    assert (clock.index, clock.count) == (1, 4) and clock.fraction == pytest.approx(0.5 / 4)
    assert clock.eta_s == pytest.approx(50 + 3 * 100)  # no stage finished: each one as long as this one
    for event in _events(("status", {"state": "running", "stage": "a", "message": "training for 9 steps"}, 60.0),
                         ("status", {"state": "running", "stage": "b", "message": "x", "index": 2, "count": 4}, 80.0),
                         ("progress", {"stage": "b:teacher", "fraction": 0.9, "eta_s": 1.0}, 90.0)):
        state.apply(event)
    assert clock.durations == {"a": 80.0} and clock.index == 2
    assert clock.fraction == pytest.approx(1 / 4)  # a sub-phase does not move the whole run's bar
    assert clock.eta_s == pytest.approx((80 - 10) + 2 * 80)  # the mean of the finished stages
    state.apply(Event("done", {"status": "finished"}, "r", 9, 200.0))
    assert clock.fraction == 1.0 and clock.eta_s is None


def test_a_resumed_attempt_replaces_the_lost_steps_but_a_sweep_keeps_its_trials():
    from studio.model.run_state import RunState

    state = RunState()
    state.apply(Event("hello", {}, "r", 1))
    for step in (1, 2, 3, 1, 2, 3):  # a learning-rate sweep: the second trial starts at step 1 again
        state.apply(Event("metric", {"stage": "s", "step": step, "values": {"train/loss": float(step)}}, "r", 2))
    assert state.metrics.series["s · train/loss"].size == 6
    state.apply(Event("hello", {}, "r", 3))  # a resume from the checkpoint at step 2
    state.apply(Event("metric", {"stage": "s", "step": 3, "values": {"train/loss": 9.0}}, "r", 4))
    series = state.metrics.series["s · train/loss"]
    assert list(series.x) == [1, 2, 3, 1, 2, 3] and list(series.y)[-1] == 9.0  # the last (step 3) replaced


def test_the_folder_scanner_reports_changes_and_deaths(tmp_path):
    from studio.model.run_folders import RunFolderScanner

    store = RunStore(tmp_path)
    paths = store.create("a", "")
    store.update(paths.id, status="running", pid=os.getpid())
    scanner = RunFolderScanner(store.runs_dir)
    assert scanner.scan() == ({paths.id}, [])  # the baseline: no transition
    assert scanner.scan() == (set(), []) and scanner.count() == (1, 1)
    paths.events.write_text("{}\n")
    assert scanner.scan() == ({paths.id}, [])
    store.update(paths.id, pid=2 ** 22 + 12345)  # an engine that is gone
    changed, transitions = scanner.scan()
    assert changed == {paths.id} and transitions == [(paths.id, "a", "running", "interrupted")]
    assert scanner.count() == (1, 0)


def test_a_cancelled_run_resumes_as_the_cancel_tooltip_promises(window, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_STEPS", "40")
    monkeypatch.setenv("FAKE_ENGINE_DELAY", "0.03")
    session = window.run_spec_file(spec_file(tmp_path, name="stopped"))
    series = lambda: session.state.metrics.series.get("student_sft · train/loss")  # noqa: E731 - a probe
    qtbot.waitUntil(lambda: series() is not None and series().size > 22, timeout=15000)  # past checkpoint-20
    monitor = window.monitor
    assert "Resume" in monitor.cancel_button.toolTip()
    monitor.cancel_button.click()
    qtbot.waitUntil(lambda: session.state.state == "cancelled" and not session.live, timeout=15000)
    monitor.refresh()
    assert monitor.resume_button.isVisibleTo(monitor)
    monitor.resume_button.click()
    qtbot.waitUntil(lambda: session.state.state == "finished", timeout=15000)
    assert list(series().x) == list(range(1, 41))
    assert any("resuming student_sft from checkpoint-20" in line for line in session.state.log)


def test_only_a_finished_stage_or_a_complete_checkpoint_is_a_resume_point(tmp_path):
    from studio.model.history_data import resumable, resume_point, resume_refusal

    store = RunStore(tmp_path)
    paths = store.create("r", "")
    record = store.update(paths.id, status="failed")
    half = paths.checkpoints("sft") / "checkpoint-5"
    half.mkdir(parents=True)  # a save the crash interrupted: the engine would discard it
    assert not resume_point(record) and not resumable(record)
    assert "Nothing to resume from" in resume_refusal(record)
    (half / "complete").write_text("5\n")
    assert resumable(record)
    finished = store.update(paths.id, status="finished")
    assert not resumable(finished) and "Re-run" in resume_refusal(finished)


def test_a_crashed_run_shows_one_status_and_the_engines_last_words_from_engine_log(window, qtbot, tmp_path,
                                                                                 monkeypatch, fake_launcher):
    from studio.main_window import MainWindow
    from studio.model.app_settings import StudioSettings

    session = _crashed_run(window, qtbot, tmp_path, monkeypatch)
    engine_log = RunStore().paths(session.run_id).root / "engine.log"
    # what a followed engine wrote after the studio stopped reading its stderr: progress, a warning, its death
    engine_log.write_text("Map:  50%|#####     | 6/12 [00:01<00:01, 5.0 examples/s]\r"
                          "Map: 100%|##########| 12/12 [00:02<00:00, 5.0 examples/s]\n"
                          "/venv/transformers/trainer.py:42: FutureWarning: `tokenizer` is deprecated\n"
                          "  warnings.warn(\n"
                          "Traceback (most recent call last):\nRuntimeError: CUDA error: out of memory (last words)\n")
    window.close()
    restarted = MainWindow(StudioSettings(), fake_launcher)
    qtbot.addWidget(restarted)
    monitor, history = restarted.monitor, restarted.history
    monitor.refresh()
    history.records = []
    history.refresh()
    history.select_run(session.run_id)
    assert monitor.badge.text() == history.table.item(0, 1).text() == "interrupted"
    text = monitor.log_view.view.toPlainText()
    assert "RuntimeError: CUDA error: out of memory (last words)" in text
    assert str(engine_log) in monitor.error_banner.text()
    assert text.count("Map:") == 1 and "12/12" in text and "6/12" not in text  # one progress line, the newest
    assert "FutureWarning" not in text and monitor.log_view.warnings_button.text() == "▸ 1 library warning"
