"""``compression-studio``: start the desktop app.

The studio imports only the engine's contract (engine.contract: specs, protocol, run store, data preview), so the
window opens in about a second; training happens in engine processes.

"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

_T0 = time.perf_counter()


def _resources_dir() -> Path:
    """The style sheet, icons and .desktop entry: ``resources`` in an install or a frozen bundle (the wheel
    maps the repository's top-level ``resources/`` there), the top-level folder in a source checkout."""
    here = Path(__file__).resolve().parent
    for folder in (here / "resources", here.parent / "resources"):
        if (folder / "studio.qss").is_file():
            return folder
    return here / "resources"


RESOURCES = _resources_dir()


def _style_sheet() -> str:
    path = RESOURCES / "studio.qss"
    return path.read_text(encoding="utf-8") if path.exists() else ""


def create_app(argv: list[str] | None = None):
    """The QApplication with the studio's name, icon and style sheet."""
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(argv or sys.argv[:1])
    if app.property("studio_configured"):
        return app  # re-styling an application whose widgets exist can crash Qt; configure once
    app.setProperty("studio_configured", True)
    app.setApplicationName("Compression Studio")
    app.setOrganizationName("compression-studio")
    app.setDesktopFileName("compression-studio")
    icon = RESOURCES / "desktop" / "compression-studio.svg"
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))
    app.setStyle("Fusion")
    app.setStyleSheet(_style_sheet())
    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compression-studio", description=__doc__)
    parser.add_argument("--ready-file", type=Path, help=argparse.SUPPRESS)  # benchmark: time to a usable window
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return parser


def _choose_engine_environment(settings) -> None:
    """Create or pick the Python environment with the engine (progress in a dialog, which remembers the choice)
    and use it."""
    from studio.widgets.engine_env_dialog import EngineEnvDialog
    from studio.model.app_settings import save_settings

    dialog = EngineEnvDialog()
    if dialog.exec() and dialog.python:
        settings.engine_python = str(dialog.python)
        save_settings(settings)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from studio.display_check import display_problem

    problem = display_problem()
    if problem:
        print(f"compression-studio: {problem}", file=sys.stderr)  # noqa: T201 - the user's terminal
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from studio.model.app_settings import apply_data_dir, load_settings

    settings = load_settings()
    apply_data_dir(settings)
    app = create_app()
    from studio.main_window import MainWindow

    from PySide6.QtCore import QTimer

    if not settings.engine_python and not args.ready_file:
        _choose_engine_environment(settings)  # the frozen bundle's first start
    window = MainWindow(settings)
    window.show()
    if os.environ.get("COMPRESSION_STUDIO_STATE_FILE"):  # end-to-end tests read what the window shows
        from studio.debug_state import STATE_FILE_ENV, install

        install(window, os.environ[STATE_FILE_ENV])
    if args.ready_file:
        # the first zero-timer fires once the event loop runs, i.e. the window is painted and takes input
        QTimer.singleShot(0, lambda: (args.ready_file.write_text(f"{time.perf_counter() - _T0:.4f}"),
                                      window.close(), app.quit()))
    else:
        QTimer.singleShot(400, window.warm_up)  # the plot pages, once the window is on screen
    code = app.exec()
    if window.detached_runs:
        # QProcess kills its child when destroyed; runs the user left running must outlive the studio, so exit
        # without running destructors (their events keep going to events.jsonl; the next start follows them).
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
