"""``python -m engine inspect SOURCE`` in the background: a model's architecture, parameters and vocabulary read
from its config (no weights), for the wizard's models page — the GUI never imports transformers."""
from __future__ import annotations


from PySide6.QtCore import QObject, Signal

from engine.contract.model_info import ModelInfo
from engine.contract.safe_json import safe_json_loads
from studio.engine_client import EngineLauncher
from studio.process import ChildProcess, process_environment


class ModelInspector(QObject):
    """``python -m engine inspect SOURCE`` in the background (config only, no weights): architecture,
    parameters, vocabulary — the models page shows it without the GUI ever importing transformers."""

    inspected = Signal(str, object)  # source, ModelInfo
    inspect_failed = Signal(str, str)  # source, message

    def __init__(self, launcher: EngineLauncher | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.launcher = launcher or EngineLauncher()
        self._jobs: dict[str, tuple[ChildProcess, list[str], list[str]]] = {}  # source → process, stdout, stderr

    def inspect(self, source: str) -> None:
        if source in self._jobs:
            return
        process, out, err = ChildProcess(self), [], []
        self._jobs[source] = (process, out, err)
        process.stdout_lines.connect(lambda lines: out.extend(b.decode("utf-8", "replace") for b in lines))
        process.stderr_lines.connect(err.extend)
        process.exited.connect(lambda code, _crashed, s=source: self._on_job_exited(s, code))
        process.failed_to_start.connect(lambda reason, s=source: self._on_job_failed_to_start(s, reason))
        process.start(self.launcher.python, self.launcher.arguments("inspect", source),
                      env=process_environment(self.launcher.env), workdir=self.launcher.workdir)

    def _on_job_exited(self, source: str, code: int) -> None:
        process, out, err = self._jobs.pop(source)
        process.deleteLater()
        info, message = None, ""
        for line in out:
            try:
                obj = safe_json_loads(line, allow_nan=True)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("type") == "error":
                message = str(obj.get("data", {}).get("message", ""))
            elif isinstance(obj, dict) and "type" not in obj:
                info = ModelInfo.from_dict(obj)
        if code == 0 and info is not None:
            self.inspected.emit(source, info)
            return
        lines = [ln for ln in err if ln.strip()]
        self.inspect_failed.emit(source, message or (lines[-1].removeprefix("error: ") if lines
                                                     else f"exit code {code}"))

    def _on_job_failed_to_start(self, source: str, reason: str) -> None:
        self._jobs.pop(source, None)
        self.inspect_failed.emit(source, f"could not start the engine: {reason}")
