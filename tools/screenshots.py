"""Render the studio's pages to PNG files for the README: ``python -m tools.screenshots docs/screenshots
[--home DATA_DIR]`` (README tooling: it lives beside the app, not inside it, and is not shipped in the wheel).

With ``--home`` the history and monitor show the runs of that data directory (e.g. one where a demo ran); without
it, two short runs of the protocol-faithful fake engine (tests/studio/fake_engine.py) fill a temporary one.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent
FAKE_ENGINE = REPO / "tests" / "studio" / "fake_engine.py"
SAMPLE_ROWS = [
    {"prompt": "Summarise: The Nile flows north through eleven countries into the Mediterranean.",
     "output": "The Nile crosses eleven countries and empties into the Mediterranean.", "task": "summarization"},
    {"prompt": "What is the capital of Peru?", "output": "Lima.", "task": "open_qa"},
    {"prompt": "Classify the sentiment: 'The battery died after an hour.'", "output": "negative",
     "task": "classification"},
    {"prompt": "Write a Python function that reverses a string.", "output": "def reverse(s):\n    return s[::-1]",
     "task": "code"},
    {"prompt": "Translate to Spanish: good morning", "output": "buenos días", "task": "translation"},
    {"prompt": "List three primary colours.", "output": "Red, yellow and blue.", "task": "brainstorming"},
]


def settle(ms: int = 400) -> None:
    """Let timers (plot refresh, monitor refresh) and layouts run."""
    from PySide6.QtWidgets import QApplication

    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def wait_for(condition, timeout_s: float) -> bool:
    end = time.perf_counter() + timeout_s
    while time.perf_counter() < end:
        if condition():
            return True
        settle(50)
    return condition()


def _fake_runs(window, steps: int, runs: int = 2) -> None:
    """Two short fake runs (KD pipeline with GRPO and 4-bit quantization) so that the history has something to
    show."""
    home = Path(os.environ["COMPRESSION_STUDIO_HOME"])
    spec = home / "showcase.yaml"
    spec.write_text("name: kd-pipeline\nstages:\n  - {kind: sft, name: teacher_sft, model: teacher}\n"
                    "  - {kind: sft, name: student_sft, model: student}\n"
                    "  - {kind: distill, name: student_kd, model: student, teacher: teacher_sft}\n"
                    "  - {kind: grpo, name: grpo, model: student_kd}\n"
                    "  - {kind: evaluate, name: eval, models: {teacher: teacher_sft, sft_student: student_sft, "
                    "kd_student: student_kd}}\n"
                    "  - {kind: quantize, name: quantize, model: student_kd}\n", encoding="utf-8")
    os.environ.update(FAKE_ENGINE_STEPS=str(steps), FAKE_ENGINE_DELAY="0")
    for _ in range(runs):
        session = window.run_spec_file(spec)
        wait_for(lambda session=session: not session.live, 60)


def render_all(out_dir: Path, home: Path | None = None, use_real_engine: bool = False,
               quick: bool = False) -> list[Path]:
    """Save one PNG per page into ``out_dir``; returns the files (``quick``: shorter waits, for the tests)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="studio-shots-"))
    os.environ["COMPRESSION_STUDIO_HOME"] = str(home or scratch / "home")
    from studio.app import create_app
    from studio.engine_client import EngineLauncher
    from studio.main_window import MainWindow
    from studio.model.app_settings import StudioSettings

    create_app()
    launcher = (EngineLauncher(python=sys.executable, workdir=str(REPO)) if use_real_engine
                else EngineLauncher(python=sys.executable, entry=[str(FAKE_ENGINE)]))
    window = MainWindow(StudioSettings(), launcher)
    window.ask = lambda *args: "cancel"
    window.resize(1280, 820)
    window.show()
    if home is None:
        _fake_runs(window, 10 if quick else 120, 1 if quick else 2)
    files: list[Path] = []

    def shot(name: str, ms: int = 500) -> None:
        settle(min(ms, 150) if quick else ms)
        path = out_dir / f"{name}.png"
        window.grab().save(str(path))
        files.append(path)

    window.go_to("Start")
    window.start_page.show_recent(len(window.store.list()), 0)
    shot("01-start")
    _wizard_shots(window, scratch, shot)
    _run_shots(window, shot)
    window.go_to("Chat")
    shot("11-chat")
    window.close()
    return files


def _wizard_shots(window, scratch: Path, shot) -> None:
    wizard = window.wizard
    window.go_to("New run")
    wizard.restart()
    models = wizard.models_page
    models.name.setText("dolly-kd")
    models.inspect_button.click()
    wait_for(lambda: bool(models.compat.text()), 120)
    shot("02-wizard-models")
    wizard.next()
    data_file = scratch / "my_tasks.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in SAMPLE_ROWS), encoding="utf-8")
    page = wizard.data_page
    page.set_preset("local")
    page.set_path(str(data_file))
    page.set_column("category", "task")
    page.refresh_preview()
    shot("03-wizard-data")
    page.set_preset("demo")
    wizard.next()
    wizard.method_page.set_method("pipeline")
    shot("04-wizard-method")
    wizard.next()
    settings = wizard.settings_page
    settings.learning_rate.setText("1e-3, 3e-3")
    settings.max_steps.setValue(400)
    settings.batch_size.setValue(16)
    settings.same_for_all.setChecked(False)  # each stage its own settings, starting from the shared ones
    grpo = settings.stage_forms["grpo"]
    settings.stage_tabs.setCurrentWidget(grpo)
    grpo.learning_rate.setText("1e-6")
    grpo.batch_size.setValue(0)  # Next switches off; the line under the fields says why
    shot("05-wizard-settings-refused")
    grpo.batch_size.setValue(4)
    wizard.next()
    shot("06-wizard-review")


def _run_shots(window, shot) -> None:
    records = [r for r in window.store.list() if (Path(r.path) / "events.jsonl").exists()]
    finished = [r for r in records if r.status == "finished"]
    if finished:
        # the richest run: one with an evaluation, else the newest
        best = next((r for r in finished if (Path(r.path) / "eval.json").exists()), finished[0])
        session = window.open_run(best)
        window.monitor.show_session(session)
        window.monitor.tabs.setCurrentIndex(0)
        shot("07-monitor-curves", 800)
        if session.state.samples:
            window.monitor.tabs.setCurrentIndex(2)
            shot("08-monitor-samples")
        window.monitor.tabs.setCurrentIndex(3)
        shot("09-monitor-evaluation")
        window.monitor.tabs.setCurrentIndex(0)
    window.go_to("History")
    history = window.history
    history.records = []
    history.refresh()
    if len(finished) >= 2:
        history.select_run(finished[0].id)
        history.select_run(finished[1].id, add=True)
        shot("10-history-overlay", 800)
    elif finished:
        history.select_run(finished[0].id)
        shot("10-history", 800)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--home", type=Path, help="a data directory whose runs the history shows")
    parser.add_argument("--real-engine", action="store_true", help="inspect models with the real engine")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    for path in render_all(args.out_dir, args.home, args.real_engine):
        log.info("saved %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
