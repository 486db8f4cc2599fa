"""A run as the studio holds it: its event source (a live engine process, a follower, or nothing for a replay)
and the :class:`~studio.run_state.RunState` built from its events. The monitor and the history present it."""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine.protocol import FINAL_STATES
from studio.engine_client import RunSource
from studio.run_state import RunState, replay


class RunSession(QObject):
    """Glue between a RunSource's signals and a RunState (all folding logic lives in RunState)."""

    run_started = Signal(str)  # run_id
    run_ended = Signal(str)  # final state: finished, cancelled or failed

    def __init__(self, title: str, source: RunSource | None = None, state: RunState | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.source = source
        self.state = state or RunState()
        self.started_at = time.time()
        if source is not None:
            source.setParent(self)
            source.event_received.connect(self._on_source_event)
            source.output_received.connect(self._on_source_output)
            source.run_started.connect(self._on_source_started)
            source.run_finished.connect(self._on_source_finished)
            source.run_failed.connect(self._on_source_failed)

    @classmethod
    def from_events(cls, title: str, events_path: Path, parent: QObject | None = None) -> "RunSession":
        """A finished run reopened from its events.jsonl."""
        return cls(title, None, replay(events_path), parent)

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
