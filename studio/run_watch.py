"""Views that follow the run folders: whatever changed a run — this window, another one, the command line, a
crash — the monitor, the history, the start page and the status bar learn of it within a second.

:class:`RunWatcher` calls :class:`~studio.model.run_folders.RunFolderScanner` on a 1 s timer and turns what it
finds into signals; :class:`FollowsRunFolders` is the main window's side: what each view does about them.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from engine.contract.errors import StoreError
from engine.contract.run_status import ENDED_STATES
from engine.contract.runs import RunRecord, RunStore
from studio.arena.catalog import models_signature, trained_models
from studio.engine_client import EngineClient, RunFollower
from studio.model.history_data import display_status
from studio.model.run_folders import RunFolderScanner
from studio.run_session import RunSession


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


class FollowsRunFolders:
    """The main window's reactions to :class:`RunWatcher` (mixed into it: it uses the window's sessions, pages,
    status bar and ``follow``)."""

    def _on_watcher_runs_changed(self, run_ids: set) -> None:
        """Something changed a run on disk: every view catches up, whoever changed it."""
        self.start_page.show_recent(*self.watcher.scanner.count())
        self.refresh_model_lists()
        if self._history is not None:
            self._history.follow_changes(run_ids)
        for session in list(self.sessions):
            if session.run_id in run_ids and not session.live:
                self._catch_up(session)
        waiting = any(s.live and not s.run_id for s in self.sessions)  # its engine has not said hello yet
        known = {s.run_id for s in self.sessions}
        ours = {s.source.pid for s in self.sessions if isinstance(s.source, EngineClient)}
        for run_id in run_ids - known:
            record = self._record(run_id)
            if record is not None and record.is_alive() and not waiting and record.pid not in ours:
                self.follow(record, show=False)  # started elsewhere: in the monitor's list, not in the way
                self.statusBar().showMessage(f"{record.name} started elsewhere; the monitor follows it")

    def refresh_model_lists(self, force: bool = False) -> None:
        """Every list that names runs' models — the arena's panes and run list, the wizard's model sources —
        re-read when a run came, went, changed status or saved a model (not on every new event)."""
        signature = models_signature(self.store.runs_dir, self.watcher.scanner.shown)
        if signature == getattr(self, "_models_signature", None) and not force:
            return
        self._models_signature = signature
        arena_refresh = getattr(self.chat, "refresh_models", None)  # the arena, once mounted
        if arena_refresh is not None:
            arena_refresh()
        page = self.wizard.models_page
        page.run_models = lambda: trained_models(self.store)
        if page.isVisible():  # otherwise it re-reads when it is next shown
            page.refresh_run_models()

    def _catch_up(self, session: RunSession) -> None:
        record = self._record(session.run_id)
        if record is None:
            return
        if record.is_alive():  # resumed from elsewhere: follow it live from where the session is
            session.catch_up()
            follower = RunFollower(record.id, Path(record.path) / "events.jsonl", record.pid,
                                   offset=session.offset or 0)
            session.attach(follower)
            follower.start()
            return
        session.events_path = session.events_path or Path(record.path) / "events.jsonl"
        session.catch_up()
        if display_status(record) == "interrupted":
            session.mark_interrupted()

    def _record(self, run_id: str) -> RunRecord | None:
        try:
            return self.store.get(run_id)
        except (KeyError, OSError, ValueError, StoreError):
            return None

    def _on_watcher_status_changed(self, run_id: str, name: str, old: str, new: str) -> None:
        if new in ENDED_STATES:
            self.statusBar().showMessage(f"{name}: {new}")
