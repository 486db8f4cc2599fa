"""Views that follow the run folders: whatever changed a run — this window, another one, the command line, a
crash — the monitor, the history, the start page and the status bar learn of it within a second.

:class:`RunWatcher` calls :class:`~studio.model.run_folders.RunFolderScanner` on a 1 s timer and turns what it
finds into signals.
"""
from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal

from engine.contract.runs import RunStore
from studio.model.run_folders import RunFolderScanner


class RunWatcher(QObject):
    """A 1 s poll of the run store's folders (see :class:`RunFolderScanner`)."""

    runs_changed = Signal(object)  # set of run ids whose run.json / events.jsonl changed (or that came or went)
    status_changed = Signal(str, str, str, str)  # run id, name, old shown status, new shown status

    def __init__(self, store: RunStore, interval_ms: int = 1000, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.scanner = RunFolderScanner(store.runs_dir)
        self.scanner.scan()  # the state at start-up is the baseline, not news
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.poll)
        self._timer.start()

    def poll(self) -> set[str]:
        changed, transitions = self.scanner.scan()
        for run_id, name, old, new in transitions:
            self.status_changed.emit(run_id, name, old, new)
        if changed:
            self.runs_changed.emit(changed)
        return changed
