"""``python -m engine inspect SOURCE`` in the background: a model's architecture, parameters and vocabulary read
from its config (no weights), for the wizard's models page — the GUI never imports transformers."""
from __future__ import annotations

import json

from PySide6.QtCore import QObject, QProcess, Signal

from engine.contract.model_info import ModelInfo
from studio.engine_client import EngineLauncher


class ModelInspector(QObject):
    """``python -m engine inspect SOURCE`` in the background (config only, no weights): architecture,
    parameters, vocabulary — the models page shows it without the GUI ever importing transformers."""

    inspected = Signal(str, object)  # source, ModelInfo
    inspect_failed = Signal(str, str)  # source, message

    def __init__(self, launcher: EngineLauncher | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.launcher = launcher or EngineLauncher()
        self._jobs: dict[str, QProcess] = {}

    def inspect(self, source: str) -> None:
        if source in self._jobs:
            return
        process = QProcess(self)
        self._jobs[source] = process
        process.finished.connect(lambda code, _status, s=source, p=process: self._on_job_finished(s, p, code))
        process.errorOccurred.connect(lambda _err, s=source, p=process: self._on_job_error(s, p))
        process.start(self.launcher.python, self.launcher.arguments("inspect", source))

    def _on_job_finished(self, source: str, process: QProcess, code: int) -> None:
        self._jobs.pop(source, None)
        out = bytes(process.readAllStandardOutput()).decode("utf-8", errors="replace")
        err = bytes(process.readAllStandardError()).decode("utf-8", errors="replace")
        process.deleteLater()
        info = None
        for line in out.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("type") == "error":
                err = str(obj.get("data", {}).get("message", err))
            elif isinstance(obj, dict) and "type" not in obj:
                info = ModelInfo.from_dict(obj)
        if code == 0 and info is not None:
            self.inspected.emit(source, info)
        else:
            lines = [ln for ln in err.strip().splitlines() if ln.strip()]
            self.inspect_failed.emit(source, lines[-1].removeprefix("error: ") if lines else f"exit code {code}")

    def _on_job_error(self, source: str, process: QProcess) -> None:
        if process.error() == QProcess.ProcessError.FailedToStart:
            self._jobs.pop(source, None)
            self.inspect_failed.emit(source, f"could not start the engine: {process.errorString()}")
