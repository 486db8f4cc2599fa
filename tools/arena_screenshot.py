"""Renders the arena with two panes mid-conversation into a PNG (``docs/screenshots/arena.png``).

    QT_QPA_PLATFORM=offscreen python -m tools.arena_screenshot [--out PATH] [--service fake|engine]

``fake`` (the default) drives the scripted stand-in service of the tests (``tests/studio/fake_chat.py``) so the
picture shows readable answers; ``engine`` uses the real chat service with the demo kit's tiny models, whose
random-initialised weights answer with noise.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEventLoop
from PySide6.QtWidgets import QApplication

from studio.arena.arena_widget import ArenaWidget
from studio.arena.catalog import ModelChoice
from studio.arena.chat_client import engine_chat_command

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
FAKE_SERVICE = PROJECT_ROOT / "tests" / "studio" / "fake_chat.py"
PROMPTS = ("What is 17 + 25? Explain briefly.", "Now multiply the result by 3.")


def _wait(predicate, timeout_s: float) -> bool:
    """Process Qt events until ``predicate()`` holds or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        if predicate():
            return True
        time.sleep(0.01)
    return False


def render(out: Path, service: str = "fake", size: tuple[int, int] = (1280, 700)) -> Path:
    """Drive the arena through one finished turn and a second one half streamed, then save a PNG."""
    if service == "fake":
        os.environ.setdefault("FAKE_CHAT_DELAY", "0.12")
        command = [sys.executable, str(FAKE_SERVICE)]
    else:
        command = engine_chat_command(sys.executable)
    arena = ArenaWidget(store=None, chat_command=command, pane_count=2)
    arena.resize(*size)
    arena.show()
    try:
        arena.load_model("pane1", ModelChoice(label="teacher (SFT)", source="demo:teacher", role="teacher"))
        arena.load_model("pane2", ModelChoice(label="student (distilled)", source="demo:student", role="student"))
        if not _wait(lambda: all(p.ready for p in arena.session.panes[:2]), 120):
            raise RuntimeError("the models did not load: " + "; ".join(p.error for p in arena.session.panes))
        arena.send(PROMPTS[0])
        _wait(lambda: not arena.session.busy, 60)
        arena.send(PROMPTS[1])
        teacher = arena.session.pane("pane1")
        _wait(lambda: len(teacher.turns[-1].answer.split()) >= 7, 60)  # mid-answer: the cursor shows
        arena.prompt_edit.setPlainText("And divide that by 7?")
        if arena.preset_combo.count() > 1:
            arena.preset_combo.setCurrentIndex(1)
        QCoreApplication.processEvents()
        out.parent.mkdir(parents=True, exist_ok=True)
        arena.grab().save(str(out))
    finally:
        arena.stop()
        arena.shutdown(3000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "screenshots" / "arena.png")
    parser.add_argument("--service", choices=("fake", "engine"), default="fake")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setStyle("Fusion")
    log.info("wrote %s", render(args.out, args.service))
    return 0


if __name__ == "__main__":
    sys.exit(main())
