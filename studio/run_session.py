"""A run as the studio holds it: its event source (a live engine process, a follower, or nothing for a replay)
and the :class:`~studio.model.run_state.RunState` built from its events. The monitor and the history present it.

A session outlives its sources: a resume attaches a new engine process to the same session, and a session
whose run changed on disk (resumed from the command line, another window) catches up from its events.jsonl.
"""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine.contract.protocol import FINAL_STATES, read_events
from studio.engine_client import RunSource
from studio.model.run_state import RunState

INTERRUPTED = "the engine stopped without finishing the run (killed, crashed or the computer went down)"


class RunSession(QObject):
    """Glue between a RunSource's signals and a RunState (all folding logic lives in RunState)."""

    run_started = Signal(str)  # run_id
    run_ended = Signal(str)  # final state: finished, cancelled or failed

    def __init__(self, title: str, source: RunSource | None = None, state: RunState | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.source: RunSource | None = None
        self.state = state or RunState()
        self.started_at = time.time()
        self.events_path: Path | None = None  # the run's events.jsonl, once known (replays, followers, catch-up)
        self.offset: int | None = None  # bytes of events_path already folded in (None: not read from the file)
        if source is not None:
            self.attach(source)

    @classmethod
    def from_events(cls, title: str, events_path: Path, parent: QObject | None = None,
                    interrupted: bool = False) -> RunSession:
        """A run reopened from its events.jsonl; ``interrupted``: its engine died without saying so."""
        session = cls(title, None, RunState(), parent)
        session.events_path = Path(events_path)
        session.catch_up()
        if interrupted:
            session.mark_interrupted()
        return session

    def attach(self, source: RunSource) -> None:
        """Take events from ``source`` from now on (a launch, a follower, a resumed engine)."""
        if self.source is not None:
            for signal, slot in self._wiring(self.source):
                signal.disconnect(slot)
        self.source = source
        source.setParent(self)
        for signal, slot in self._wiring(source):
            signal.connect(slot)
        if self.state.done:
            self.state.state = "starting"  # a resume: the badge must not say "failed" while the engine starts

    def _wiring(self, source: RunSource) -> list:
        return [(source.event_received, self._on_source_event), (source.output_received, self._on_source_output),
                (source.run_started, self._on_source_started), (source.run_finished, self._on_source_finished),
                (source.run_failed, self._on_source_failed)]

    def catch_up(self) -> int:
        """Fold in the events appended to events.jsonl that this session has not seen (by seq, then by offset);
        returns how many."""
        path = self.events_path
        if path is None or not path.exists():
            return 0
        count = 0
        for offset, event in read_events(path, self.offset or 0):
            self.offset = offset
            if event.seq > self.state.last_seq:
                self.state.apply(event)
                count += 1
        return count

    def mark_interrupted(self) -> None:
        if not self.state.done:
            self.state.fail(INTERRUPTED)

    @property
    def run_id(self) -> str:
        return self.state.run_id

    @property
    def live(self) -> bool:
        return self.source is not None and not self.source.terminal

    def cancel(self) -> None:
        if self.live:
            self.state.state = "cancelling"
            self.source.cancel()

    def _on_source_event(self, event) -> None:
        self.state.apply(event)

    def _on_source_output(self, line: str) -> None:
        self.state.add_log(line)

    def _on_source_started(self, run_id: str) -> None:
        self.state.run_id = self.state.run_id or run_id
        if self.state.state == "starting":
            self.state.state = "running"
        self.run_started.emit(run_id)

    def _on_source_finished(self, status: str, summary: dict) -> None:
        self.state.state = status if status in FINAL_STATES else "finished"
        self.state.summary = summary or self.state.summary
        self.run_ended.emit(self.state.state)

    def _on_source_failed(self, message: str, log_tail: str) -> None:
        self.state.fail(message)
        self.run_ended.emit("failed")
