"""The first start without a working engine: :class:`EngineEnvInstaller` runs an install plan
(:mod:`studio.model.engine_env`) step by step in a child process with progress, and :class:`EngineEnvDialog` offers to
create the managed environment or to pick an existing Python."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from studio.model.engine_env import (
    Machine,
    Step,
    StepProgress,
    default_plan,
    detect_machine,
    env_python,
    managed_env_dir,
    overall_fraction,
    parse_probe,
    probe_argv,
    remember_python,
)
from studio.process import ChildProcess


class EngineEnvInstaller(QObject):
    """Runs an install plan step by step in a QProcess (never on the GUI thread's time)."""

    progressed = Signal(float, str)  # overall fraction, message
    line_logged = Signal(str)
    finished = Signal(bool, str)  # success, python path or the reason it failed

    def __init__(self, steps: list[Step], target: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.steps, self.target, self.index = steps, target, -1
        self._parser = StepProgress()
        self._process = ChildProcess(self, merged=True)  # pip's progress lines as they happen, with its errors
        self._process.stdout_lines.connect(self._on_process_lines)
        self._process.exited.connect(self._on_process_exited)
        self._process.failed_to_start.connect(self._on_process_failed_to_start)

    def start(self) -> None:
        self._next()

    def cancel(self) -> None:
        self.index = len(self.steps)  # no further step starts
        self._process.kill()

    def _next(self) -> None:
        self.index += 1
        if self.index >= len(self.steps):
            python = env_python(self.target)
            remember_python(python)
            self.finished.emit(True, str(python))
            return
        step = self.steps[self.index]
        self._parser = StepProgress(step.expected_packages)
        self.progressed.emit(overall_fraction(self.steps, self.index, 0.0), step.title)
        self._process.start(step.argv[0], step.argv[1:])

    def _on_process_lines(self, lines: list) -> None:
        if self.index >= len(self.steps):
            return
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            self.line_logged.emit(line)
            fraction = self._parser.feed(line)
            step = self.steps[self.index]
            message = f"{step.title}: {self._parser.message}" if self._parser.message else step.title
            self.progressed.emit(overall_fraction(self.steps, self.index, fraction), message)

    def _on_process_exited(self, code: int, crashed: bool) -> None:
        if self.index >= len(self.steps):
            self.finished.emit(False, "cancelled")
        elif code != 0 or crashed:
            self.finished.emit(False, f"{self.steps[self.index].title} failed (exit code {code}); "
                               "see the log for pip's message.")
        else:
            self._next()

    def _on_process_failed_to_start(self, _reason: str) -> None:
        self.finished.emit(False, f"could not start {self.steps[self.index].argv[0]}")


class EngineEnvDialog(QDialog):
    """First start without a working engine: create the managed environment (with progress) or pick a Python."""

    def __init__(self, parent: QWidget | None = None, machine: Machine | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Engine environment")
        self.python: Path | None = None
        self._installer: EngineEnvInstaller | None = None
        self._probe = ChildProcess(self)
        self._probe_out: list[str] = []
        self._probe_err: list[str] = []
        self._probe.stdout_lines.connect(lambda lines: self._probe_out.extend(b.decode("utf-8", "replace")
                                                                              for b in lines))
        self._probe.stderr_lines.connect(self._probe_err.extend)
        self._probe.exited.connect(self._on_probe_exited)
        text = QLabel("Compression Studio trains and evaluates models in a separate Python environment with "
                      "PyTorch. None was found.\n" + (machine or detect_machine()).describe() + ".")
        text.setWordWrap(True)
        self.status = QLabel("")
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.log = QPlainTextEdit(readOnly=True)
        self.log.setMaximumBlockCount(2000)
        self.create_button = QPushButton("Create it")
        self.existing_button = QPushButton("Use an existing Python…")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        buttons.addButton(self.create_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.existing_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        self.create_button.clicked.connect(self._on_create_clicked)
        self.existing_button.clicked.connect(self._on_existing_clicked)
        layout = QVBoxLayout(self)
        for widget in (text, self.status, self.bar, self.log, buttons):
            layout.addWidget(widget)

    def use_python(self, python: str | Path) -> None:
        """Check ``python`` in a child process; accept the dialog if it has the engine and torch."""
        self.status.setText(f"Checking {python}…")
        self._candidate = Path(python)
        program, *arguments = probe_argv(python)
        self._probe_out.clear()
        self._probe_err.clear()
        self._probe.start(program, arguments)

    def _on_existing_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "The Python of an environment with the engine")
        if path:
            self.use_python(path)

    def _on_probe_exited(self, _code: int, _crashed: bool) -> None:
        env = parse_probe(self._candidate, "\n".join(self._probe_out), "\n".join(self._probe_err))
        if not env.ok:
            self.status.setText(f"{env.python} cannot run the engine: {env.problem or 'torch or engine missing'}")
            return
        remember_python(env.python)
        self.python = env.python
        self.accept()

    def _on_create_clicked(self) -> None:
        try:
            steps = default_plan()
        except RuntimeError as exc:
            self.status.setText(str(exc))
            return
        self.create_button.setEnabled(False)
        self.existing_button.setEnabled(False)
        self._installer = EngineEnvInstaller(steps, managed_env_dir(), self)
        self._installer.progressed.connect(self._on_installer_progressed)
        self._installer.line_logged.connect(self.log.appendPlainText)
        self._installer.finished.connect(self._on_installer_finished)
        self.rejected.connect(self._installer.cancel)
        self._installer.start()

    def _on_installer_progressed(self, fraction: float, message: str) -> None:
        self.bar.setValue(int(1000 * fraction))
        self.status.setText(message)

    def _on_installer_finished(self, ok: bool, detail: str) -> None:
        if ok:
            self.python = Path(detail)
            self.accept()
            return
        self.status.setText(detail)
        self.create_button.setEnabled(True)
        self.existing_button.setEnabled(True)
