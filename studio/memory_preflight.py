"""``python -m engine preflight SPEC`` in the background: every stage's estimated peak memory from the models'
configs (no weights read; engine/models/memory_plan.py), for the review page — the GUI never imports torch."""
from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from engine.contract.safe_json import safe_json_loads

from studio.engine_client import EngineLauncher
from studio.process import ChildProcess, process_environment


class MemoryPreflight(QObject):
    """One check at a time; a request made while one runs replaces any waiting one, and only the answer for the
    latest spec is announced."""

    checked = Signal(object)  # the plan: a dict (device, available_bytes, fits, peak_bytes, stages, refusal)
    check_failed = Signal(str)  # a sentence

    def __init__(self, launcher: EngineLauncher | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.launcher = launcher or EngineLauncher()
        self._job: tuple[ChildProcess, list[str], list[str]] | None = None
        self._pending: str | None = None

    def check(self, spec_path: str) -> None:
        if self._job is not None:
            self._pending = spec_path
            return
        process, out, err = ChildProcess(self), [], []
        self._job = (process, out, err)
        process.stdout_lines.connect(lambda lines: out.extend(b.decode("utf-8", "replace") for b in lines))
        process.stderr_lines.connect(err.extend)
        process.exited.connect(self._on_job_exited)
        process.failed_to_start.connect(self._on_job_failed_to_start)
        process.start(self.launcher.python, self.launcher.arguments("preflight", spec_path),
                      env=process_environment(self.launcher.env), workdir=self.launcher.workdir)

    def _next(self) -> None:
        pending, self._pending = self._pending, None
        if pending:
            self.check(pending)

    def _on_job_exited(self, code: int, _crashed: bool) -> None:
        process, out, err = self._job
        self._job = None
        process.deleteLater()
        if self._pending is None:  # otherwise this answer is for a spec already replaced
            report = None
            for line in out:
                try:
                    obj = safe_json_loads(line, allow_nan=True)
                except ValueError:
                    continue
                if isinstance(obj, dict) and "stages" in obj:
                    report = obj
            # 1: it does not fit, and the plan says why; 3: unknown (fits null), and the plan says why
            if report is not None and code in (0, 1, 3):
                self.checked.emit(report)
            else:
                lines = [ln for ln in err if ln.strip()]
                self.check_failed.emit(lines[-1].removeprefix("error: ") if lines else f"exit code {code}")
        self._next()

    def _on_job_failed_to_start(self, reason: str) -> None:
        self._job = None
        self.check_failed.emit(f"could not start the engine: {reason}")
        self._next()
