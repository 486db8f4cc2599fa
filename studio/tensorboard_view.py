"""Open runs in TensorBoard: find the ``tensorboard`` command of the engine's environment, start it on a free
local port (a child process), and open the browser once it answers (the history shows the address too: a machine
without a browser opened nothing, silently).

The studio never imports tensorboard (or torch): the engine writes the event files (runs/<id>/tensorboard/), and
this module only starts the command the engine's environment installed. Several runs open side by side through
``--logdir_spec name:folder,…``. One TensorBoard at a time: opening other runs replaces it; it stops with the
studio.
"""
from __future__ import annotations

import logging
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices

from studio.process import ChildProcess

log = logging.getLogger(__name__)
START_TIMEOUT_MS = 60_000  # TensorBoard's first start imports a lot; a slow machine needs a while
POLL_MS = 250


def find_tensorboard(python: str) -> str | None:
    """The ``tensorboard`` command next to the engine's Python (its environment's bin folder), else on PATH."""
    folder = Path(python).parent
    return shutil.which("tensorboard", path=str(folder)) or shutil.which("tensorboard")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class TensorBoardLauncher(QObject):
    """Starts TensorBoard for a set of log folders and opens it in the browser."""

    opened = Signal(str)  # the URL, once TensorBoard answers
    failed = Signal(str)  # one sentence

    def __init__(self, python: Callable[[], str], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._python = python
        self.process: ChildProcess | None = None
        self.url = ""
        self.browser_opened = False  # whether the desktop opened the URL (no browser: the history shows it)
        self._logdirs: dict[str, str] = {}
        self._waited_ms = 0
        self._port = 0
        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._check_started)
        self.open_url: Callable[[QUrl], object] = QDesktopServices.openUrl  # tests replace the browser

    def executable(self) -> str | None:
        return find_tensorboard(self._python())

    @property
    def available(self) -> bool:
        return self.executable() is not None

    def open(self, logdirs: dict[str, Path]) -> None:
        """Show ``logdirs`` (display name → folder) in TensorBoard, starting it unless it already shows them."""
        wanted = {name: str(folder) for name, folder in logdirs.items()}
        if self._running() and wanted == self._logdirs and self.url:
            self.browser_opened = bool(self.open_url(QUrl(self.url)))
            self.opened.emit(self.url)
            return
        exe = self.executable()
        if exe is None:
            self.failed.emit("TensorBoard is not installed in the engine's environment; install it there with "
                             "pip install tensorboard.")
            return
        self.stop()
        self._logdirs, self._port, self._waited_ms, self.url = wanted, free_port(), 0, ""
        if len(wanted) == 1:
            where = ["--logdir", next(iter(wanted.values()))]
        else:
            where = ["--logdir_spec", ",".join(f"{name}:{folder}" for name, folder in wanted.items())]
        self.process, self._output = ChildProcess(self, merged=True), []
        self.process.stdout_lines.connect(lambda lines: self._output.extend(lines))
        self.process.exited.connect(self._on_finished)
        self.process.start(exe, [*where, "--host", "127.0.0.1", "--port", str(self._port)])
        self._poll.start()

    def _running(self) -> bool:
        return self.process is not None and self.process.running

    def _check_started(self) -> None:
        self._waited_ms += POLL_MS
        if _answers(self._port):
            self._poll.stop()
            self.url = f"http://127.0.0.1:{self._port}/"
            self.browser_opened = bool(self.open_url(QUrl(self.url)))
            self.opened.emit(self.url)
        elif self._waited_ms >= START_TIMEOUT_MS:
            self.stop()
            self.failed.emit(f"TensorBoard did not answer within {START_TIMEOUT_MS // 1000} s; run it by hand: "
                             f"tensorboard --logdir {next(iter(self._logdirs.values()), '')}")

    def _on_finished(self, code: int, _crashed: bool) -> None:
        if self._poll.isActive():  # it exited before it answered
            self._poll.stop()
            output = [line.decode(errors="replace").strip() for line in self._output if line.strip()]
            detail = output[-1][:200] if output else f"exit code {code}"
            self.failed.emit(f"TensorBoard stopped before it started ({detail}).")

    def stop(self) -> None:
        self._poll.stop()
        if self.process is not None:
            self.process.exited.disconnect(self._on_finished)
            if self._running():
                self.process.kill()
                self.process.qprocess.waitForFinished(3000)
            self.process.deleteLater()
            self.process = None
