"""The studio driving the real engine (``python -m engine run``) on a tiny demo-kit configuration."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine.contract.runs import RunStore

REPO = Path(__file__).resolve().parents[2]
TINY = """name: tiny-real
student: {source: demo:student}
data: {preset: demo, max_samples: 48, max_length: 48}
device: cpu
stages:
  - {kind: sft, name: student_sft, model: student,
     train: {max_steps: 4, batch_size: 4, logging_steps: 1, save_steps: 1000}}
"""


@pytest.mark.timeout(300)
def test_real_engine_run_streams_metrics_into_the_plot(qtbot, home, tmp_path):
    from studio.engine_client import EngineLauncher
    from studio.main_window import MainWindow
    from studio.model.app_settings import StudioSettings

    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY, encoding="utf-8")
    launcher = EngineLauncher(python=sys.executable, workdir=str(REPO),
                              env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    window = MainWindow(StudioSettings(), launcher)
    window.ask = lambda title, text: "cancel"
    qtbot.addWidget(window)
    session = window.run_spec_file(spec)
    qtbot.waitUntil(lambda: session.state.done, timeout=280_000)
    assert session.state.state == "finished", "\n".join(list(session.state.log)[-40:])
    window.monitor.plots.refresh()
    x, y = window.monitor.plots.curve_data("student_sft · train/loss")
    assert list(x) == [1, 2, 3, 4] and all(v > 0 for v in y)
    assert "Learning rate" in window.monitor.plots.plot_titles()
    assert session.state.progress["step"] == 4 and session.state.progress["total"] == 4
    assert RunStore().get(session.run_id).status == "finished"
    assert (RunStore().paths(session.run_id).model("student_sft") / "config.json").exists()
