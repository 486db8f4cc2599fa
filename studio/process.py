"""One wrapper around QProcess for every child the studio starts — engine runs, the chat service, model
inspection, the engine-environment installer and TensorBoard.

It owns what they all need and used to write each for itself: the environment (unbuffered output, extra
variables, the source checkout on PYTHONPATH), output cut into whole lines (a chunk may end mid-line; progress
bars end theirs with ``\\r``), and a stop that asks first, then terminates, then kills (Frescobaldi's and Spyder's
way). What the lines mean stays with each client.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

SOURCE_CHECKOUT = Path(__file__).resolve().parents[1]  # `-m engine` resolves from a checkout as from an install


class LineSplitter:
    """Bytes in, whole lines out; the unfinished tail waits for its newline."""

    def __init__(self, cr_ends_line: bool = False) -> None:
        self.cr_ends_line = cr_ends_line
        self._tail = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._tail + chunk
        if self.cr_ends_line:
            data = data.replace(b"\r", b"\n")
        *lines, self._tail = data.split(b"\n")
        return lines

    def flush(self) -> list[bytes]:
        tail, self._tail = self._tail, b""
        return [tail] if tail.strip() else []


def process_environment(extra: dict | None = None, *, source_checkout: bool = False) -> QProcessEnvironment:
    """The studio's environment, with unbuffered Python output (events must not sit in a pipe buffer)."""
    env = QProcessEnvironment.systemEnvironment()
    env.insert("PYTHONUNBUFFERED", "1")
    if source_checkout:
        path = env.value("PYTHONPATH", "")
        env.insert("PYTHONPATH", os.pathsep.join(p for p in (str(SOURCE_CHECKOUT), path) if p))
    for key, value in (extra or {}).items():
        env.insert(key, str(value))
    return env


class ChildProcess(QObject):
    """A QProcess that speaks in lines. Every line is delivered before ``exited``."""

    stdout_lines = Signal(list)  # list[bytes]: whole lines of stdout (all output when merged)
    stderr_lines = Signal(list)  # list[str]: whole lines of stderr (\r ends a line: progress bars)
    started = Signal()
    exited = Signal(int, bool)  # exit code, crashed (killed or died of a signal)
    failed_to_start = Signal(str)  # Qt's reason
    escalated = Signal(str)  # "terminate" or "kill": the polite request was not enough

    def __init__(self, parent: QObject | None = None, *, merged: bool = False) -> None:
        super().__init__(parent)
        self.qprocess = QProcess(self)
        if merged:
            self.qprocess.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        self.stdout_splitter = LineSplitter(cr_ends_line=merged)
        self._stderr = LineSplitter(cr_ends_line=True)
        self._timers: list[QTimer] = []
        self.qprocess.readyReadStandardOutput.connect(self._on_qprocess_stdout)
        self.qprocess.readyReadStandardError.connect(self._on_qprocess_stderr)
        self.qprocess.started.connect(self.started)
        self.qprocess.finished.connect(self._on_qprocess_finished)
        self.qprocess.errorOccurred.connect(self._on_qprocess_error)

    # ------------------------------------------------------------------ lifetime
    def start(self, program: str, arguments: list[str], *, env: QProcessEnvironment | None = None,
              workdir: str = "", new_session: bool = False) -> None:
        """Start ``program arguments``; ``new_session``: outlive the studio and its terminal (Unix)."""
        self.stdout_splitter = LineSplitter(self.stdout_splitter.cr_ends_line)
        self._stderr = LineSplitter(cr_ends_line=True)
        self.qprocess.setProcessEnvironment(env or process_environment())
        if workdir:
            self.qprocess.setWorkingDirectory(workdir)
        if new_session and sys.platform != "win32":
            # closing the terminal (SIGHUP) or Ctrl-C there (SIGINT to the foreground group) must not reach it
            flags = QProcess.UnixProcessFlag
            self.qprocess.setUnixProcessParameters(flags.CreateNewSession | flags.ResetSignalHandlers)
        self.qprocess.start(program, arguments)

    @property
    def running(self) -> bool:
        return self.qprocess.state() != QProcess.ProcessState.NotRunning

    @property
    def pid(self) -> int:
        return int(self.qprocess.processId())

    def write(self, text: str) -> bool:
        """Write to stdin while running; False when the text could not be sent."""
        if self.qprocess.state() != QProcess.ProcessState.Running:
            return False
        self.qprocess.write(text.encode("utf-8"))
        return True

    def close_stdin(self) -> None:
        self.qprocess.closeWriteChannel()

    def stop(self, ask: Callable[[], None] | None, grace_ms: int, terminate_grace_ms: int) -> None:
        """``ask`` (a stdin command, a signal), then terminate after ``grace_ms``, then kill."""
        if not self.running:
            return
        if ask is not None:
            ask()
        self._schedule(grace_ms, "terminate")
        self._schedule(grace_ms + terminate_grace_ms, "kill")

    def stop_now(self, wait_ms: int) -> None:
        """Terminate, then kill, blocking up to ``wait_ms`` each (application exit)."""
        if self.running and not self.qprocess.waitForFinished(wait_ms):
            self.qprocess.terminate()
            if not self.qprocess.waitForFinished(wait_ms):
                self.qprocess.kill()
                self.qprocess.waitForFinished(wait_ms)

    def kill(self) -> None:
        if self.running:
            self.qprocess.kill()


    def _schedule(self, ms: int, how: str) -> None:
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.timeout.connect(lambda: self._escalate(how))
        timer.start(ms)
        self._timers.append(timer)

    def _escalate(self, how: str) -> None:
        if self.running:
            self.escalated.emit(how)
            self.qprocess.terminate() if how == "terminate" else self.qprocess.kill()

    # ------------------------------------------------------------------ output
    def _on_qprocess_stdout(self) -> None:
        lines = self.stdout_splitter.feed(bytes(self.qprocess.readAllStandardOutput()))
        if lines:
            self.stdout_lines.emit(lines)

    def _on_qprocess_stderr(self) -> None:
        lines = self._stderr.feed(bytes(self.qprocess.readAllStandardError()))
        text = [raw.decode("utf-8", errors="replace").rstrip() for raw in lines]
        if any(text):
            self.stderr_lines.emit([t for t in text if t])

    def _on_qprocess_finished(self, exit_code: int, status: QProcess.ExitStatus) -> None:
        self._on_qprocess_stdout()
        self._on_qprocess_stderr()
        tail = self.stdout_splitter.flush()
        if tail:
            self.stdout_lines.emit(tail)
        rest = [raw.decode("utf-8", errors="replace").rstrip() for raw in self._stderr.flush()]
        if rest:
            self.stderr_lines.emit(rest)
        for timer in self._timers:
            timer.stop()
        self._timers.clear()
        self.exited.emit(exit_code, status == QProcess.ExitStatus.CrashExit)

    def _on_qprocess_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.failed_to_start.emit(self.qprocess.errorString())
