"""What every test directory shares: Qt, loaded only where its GUI libraries load.

pytest-qt is loaded from here, not auto-loaded (``-p no:pytest-qt`` in pyproject.toml): its start-up imports
QtGui, which needs system libraries (libEGL, libGL, libxkbcommon, libfontconfig, glib) that a bare Python machine
lacks, and auto-loaded it would stop the whole run, engine tests included. Without those libraries every test
module that uses Qt is reported as skipped with the reason and the install command (``-ra`` prints it);
``.ci/run`` installs them.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import
# Every event any EventWriter emits during the tests — the pipeline's stages, the chat service, the CLI's tools and
# the studio's stand-ins, here or in a child process (they inherit the environment) — must carry exactly its
# type's declared keys (engine/contract/events.py): an undeclared key fails the test that emitted it.
os.environ["COMPRESSION_STRICT_EVENTS"] = "1"

# Debian packages of the system libraries QtGui links against (ldd of libQt6Gui.so.6 in the PySide6 wheel).
QT_PACKAGES = "libegl1 libgl1 libxkbcommon0 libfontconfig1 libglib2.0-0 libdbus-1-3"


def _qt_problem() -> str | None:
    try:
        import PySide6.QtGui  # noqa: F401 - imported only to see whether Qt's libraries load
    except ImportError as exc:
        return f"needs Qt's system libraries ({exc}): apt-get install {QT_PACKAGES}"
    return None


QT_PROBLEM = _qt_problem()
pytest_plugins = [] if QT_PROBLEM else ["pytestqt.plugin"]


def _uses_qt(path: Path) -> bool:
    if "studio" in path.parent.name:
        return True
    text = path.read_text(encoding="utf-8", errors="replace")
    return "qtbot" in text or "from studio" in text or "PySide6" in text


class _SkippedModule(pytest.Module):
    """A test module that needs Qt on a machine without it: one visible skip instead of an import error."""

    def _getobj(self):
        pytest.skip(QT_PROBLEM, allow_module_level=True)


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector):
    if QT_PROBLEM and _uses_qt(module_path):
        return _SkippedModule.from_parent(parent, path=module_path)
    return None
