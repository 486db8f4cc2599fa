"""Studio tests: Qt offscreen, a private data directory per test (the ``home`` fixture, used by every
test_studio_* module), and a fake engine that speaks the protocol."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import

import pytest

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(path))
    monkeypatch.setenv("FAKE_ENGINE_STEPS", "12")
    monkeypatch.setenv("FAKE_ENGINE_DELAY", "0.01")
    monkeypatch.delenv("FAKE_ENGINE_MODE", raising=False)
    return path


@pytest.fixture
def fake_launcher():
    from studio.engine_client import EngineLauncher

    return EngineLauncher(python=sys.executable, entry=[str(FAKE_ENGINE)])


@pytest.fixture
def window(qtbot, home, fake_launcher):
    from studio.main_window import MainWindow
    from studio.model.app_settings import StudioSettings

    win = MainWindow(StudioSettings(), fake_launcher)
    win.ask = lambda title, text: "cancel"  # never block a test on the close dialog
    qtbot.addWidget(win)
    win.show()
    return win
