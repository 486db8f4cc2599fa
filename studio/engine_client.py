"""The studio's side of the engine protocol: a QProcess per run, and a follower for runs started elsewhere.

Both turn protocol events into the same Qt signals (:class:`RunSource`), so the monitor does not care whether
it watches a run it launched (stdout of its own ``python -m engine run``) or one it re-attached to after a
restart (polling the run's ``events.jsonl``). Cancelling goes stdin ``cancel`` → terminate → kill, as
Frescobaldi and Spyder do; a follower, which has no stdin, sends SIGINT (the engine's clean-cancel signal) →
SIGTERM → SIGKILL. Every run ends in exactly one of ``run_finished`` or ``run_failed``.
"""
from __future__ import annotations

import collections
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from engine.contract.protocol import Event, ProtocolError, command_line, read_events
from engine.contract.runs import pid_alive
from studio.process import ChildProcess, process_environment

log = logging.getLogger(__name__)
CANCEL_GRACE_MS = 8000  # a training step plus a checkpoint save; then terminate
TERMINATE_GRACE_MS = 3000  # then kill
LOG_LINES = 4000
DRAIN_BUDGET_S = 0.005  # event handling per event-loop turn; the GUI stays responsive during bursts


@dataclass
class EngineLauncher:
    """How to start the engine: ``python -m engine`` of the engine's environment (a setting, so a packaged
    studio can point at another environment); tests swap ``entry`` for a fake engine script."""

    python: str = field(default_factory=lambda: sys.executable)
    entry: list = field(default_factory=lambda: ["-m", "engine"])
    env: dict = field(default_factory=dict)
    workdir: str = ""

    def arguments(self, *args: str) -> list[str]:
        return [*self.entry, *args]

    def command_text(self, *args: str) -> str:
        """The command a user could type (shown in the log)."""
        return " ".join([self.python, *self.arguments(*args)])



class RunSource(QObject):
    """Signals shared by :class:`EngineClient` and :class:`RunFollower`."""

    event_received = Signal(object)  # engine.contract.protocol.Event, every event
    run_started = Signal(str)  # run_id (from the hello event, or known up front when following)
    status_changed = Signal(str, str)  # state, stage
    metric_received = Signal(str, int, object)  # stage, step, values (dict)
    progress_received = Signal(object)  # dict
    sample_received = Signal(object)  # dict
    log_received = Signal(str)  # one line: engine log events, stderr and the studio's own notes
    output_received = Signal(str)  # the lines of log_received that are not protocol events (stderr, notes)
    error_received = Signal(str)
    run_finished = Signal(str, object)  # status (finished or cancelled), summary dict
    run_failed = Signal(str, str)  # last error, log tail

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.run_id = ""
        self.last_error = ""
        self.log_lines: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self.terminal = False  # run_finished or run_failed was emitted

    def _dispatch(self, event: Event) -> None:
        d = event.data
        if event.run_id and not self.run_id:
            self.run_id = event.run_id
            self.run_started.emit(event.run_id)
        self.event_received.emit(event)
        kind = event.type
        if kind == "hello":
            self.last_error = ""  # a resumed run's new attempt: the last attempt's error is history
        if kind == "metric":
            self.metric_received.emit(str(d.get("stage", "")), int(d.get("step", 0)), dict(d.get("values", {})))
        elif kind == "progress":
            self.progress_received.emit(dict(d))
        elif kind == "status":
            self.status_changed.emit(str(d.get("state", "")), str(d.get("stage", "")))
        elif kind == "sample":
            self.sample_received.emit(dict(d))
        elif kind == "log":
            self._add_log(f"[{d.get('level', 'info')}] {d.get('message', '')}")
        elif kind == "error":
            self.last_error = str(d.get("message", "error"))
            self._add_log(f"[error] {self.last_error}")
            self.error_received.emit(self.last_error)
        elif kind == "done":
            status = str(d.get("status", "finished"))
            if status == "failed":
                self._end_failed(self.last_error or "the run failed")
            else:
                self._end(status, dict(d.get("summary", {})))

    def _add_log(self, line: str) -> None:
        self.log_lines.append(line)
        self.log_received.emit(line)

    def _add_output(self, line: str) -> None:
        self._add_log(line)
        self.output_received.emit(line)

    def _end(self, status: str, summary: dict) -> None:
        if not self.terminal:
            self.terminal = True
            self.run_finished.emit(status, summary)

    def _end_failed(self, message: str) -> None:
        if not self.terminal:
            self.terminal = True
            self.last_error = message
            self.run_failed.emit(message, "\n".join(list(self.log_lines)[-200:]))

    @property
    def running(self) -> bool:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError


class EngineClient(RunSource):
    """One engine process (``python -m engine run SPEC`` / ``demo``): stdout lines → events → signals."""

    def __init__(self, launcher: EngineLauncher | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.launcher = launcher or EngineLauncher()
        self.process = ChildProcess(self)
        self._pending: collections.deque[bytes] = collections.deque()
        self._drain_timer = QTimer(self)
        self._drain_timer.setSingleShot(True)
        self._drain_timer.setInterval(0)
        self._drain_timer.timeout.connect(self._on_drain_timer_timeout)
        self.process.stdout_lines.connect(self._on_process_stdout_lines)
        self.process.stderr_lines.connect(self._on_process_stderr_lines)
        self.process.escalated.connect(self._on_process_escalated)
        self.process.exited.connect(self._on_process_exited)
        self.process.failed_to_start.connect(self._on_process_failed_to_start)

    def start(self, *args: str) -> None:
        """Start ``python -m engine ARGS`` in a session of its own (a run the user leaves running outlives the
        studio: the engine writes its events to the run folder and ignores closed pipes); events arrive as
        signals."""
        self._add_output(f"$ {self.launcher.command_text(*args)}")
        self.process.start(self.launcher.python, self.launcher.arguments(*args),
                           env=process_environment(self.launcher.env), workdir=self.launcher.workdir,
                           new_session=True)

    @property
    def running(self) -> bool:
        return self.process.running

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, type_: str, **fields) -> None:
        self.process.write(command_line(type_, **fields))

    def cancel(self, grace_ms: int = CANCEL_GRACE_MS, terminate_grace_ms: int = TERMINATE_GRACE_MS) -> None:
        """Ask nicely (stdin ``cancel``: the engine saves a checkpoint), then terminate, then kill."""
        if not self.running:
            return
        self._add_output("[studio] cancel requested")
        self.process.stop(lambda: self.send("cancel"), grace_ms, terminate_grace_ms)

    def kill(self) -> None:
        """Stop the engine at once (it will be reported as failed)."""
        self.process.kill()

    def _on_process_escalated(self, how: str) -> None:
        self._add_output("[studio] the engine did not stop in time; terminating it" if how == "terminate"
                         else "[studio] the engine ignored terminate; killing it")

    def feed_stdout(self, chunk: bytes) -> None:
        """Handle a chunk of engine stdout as the process would deliver it (tests feed bursts this way)."""
        self._on_process_stdout_lines(self.process.stdout_splitter.feed(chunk))

    def _on_process_stdout_lines(self, lines: list) -> None:
        self._pending.extend(lines)
        self.drain()

    def drain(self, budget_s: float | None = DRAIN_BUDGET_S) -> None:
        """Handle pending stdout lines for at most ``budget_s`` (None: all of them), so that a burst of
        thousands of events never freezes the window."""
        deadline = None if budget_s is None else time.perf_counter() + budget_s
        while self._pending:
            self._handle_stdout_line(self._pending.popleft())
            if deadline is not None and time.perf_counter() > deadline:
                break
        if self._pending and not self._drain_timer.isActive():
            self._drain_timer.start()

    def _on_drain_timer_timeout(self) -> None:
        self.drain()

    def _handle_stdout_line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").strip()
        if not line:
            return
        try:
            event = Event.from_json(line)
        except ProtocolError as exc:
            self._add_output(f"[stdout] {line[:500]}")  # a stray print in the engine: keep it, do not crash
            log.debug("non-event stdout line: %s", exc)
            return
        self._dispatch(event)

    def _on_process_stderr_lines(self, lines: list) -> None:
        for text in lines:
            self._add_output(text)

    def _on_process_exited(self, exit_code: int, crashed: bool) -> None:
        self.drain(budget_s=None)  # every event before the verdict
        if self.terminal:
            return
        how = "was killed or crashed" if crashed else f"exited with code {exit_code}"
        message = f"the engine {how} before finishing"
        if self.last_error:
            message = f"{self.last_error} ({message})"
        self._end_failed(message)

    def _on_process_failed_to_start(self, reason: str) -> None:
        self._end_failed(f"could not start the engine ({self.launcher.python}): {reason}; check the engine "
                         "Python in Settings")


class RunFollower(RunSource):
    """Tails a run's events.jsonl (a run still going after a studio restart), polling with a QTimer."""

    def __init__(self, run_id: str, events_path: Path, pid: int, interval_ms: int = 250,
                 parent: QObject | None = None, offset: int = 0) -> None:
        super().__init__(parent)
        self.events_path = Path(events_path)
        self.pid = pid
        self.offset = offset  # a session that already holds the first events follows on from there
        self._current_attempt = True  # whether the events read belong to the engine process ``pid``
        self._known_run_id = run_id
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._on_timer_timeout)
        self._signals_sent: list[int] = []

    def start(self) -> None:
        self.run_id = self._known_run_id
        self.run_started.emit(self.run_id)
        self.poll()
        if not self.terminal:
            self._timer.start()

    @property
    def running(self) -> bool:
        return not self.terminal and pid_alive(self.pid)

    def _dispatch(self, event: Event) -> None:
        """A resumed run's events.jsonl holds every attempt: the ``done`` of an earlier one (a failure, a
        cancel) is part of its story, not the end of the run this follower watches."""
        if event.type == "hello" and self.pid > 0:
            self._current_attempt = int(event.data.get("pid", 0) or 0) == self.pid
        if event.type == "done" and not self._current_attempt:
            self.event_received.emit(event)
            return
        super()._dispatch(event)

    def poll(self, budget_s: float = DRAIN_BUDGET_S) -> int:
        """Read the events appended since the last poll (for at most ``budget_s``; the next event-loop turn goes
        on); returns how many."""
        count = 0
        deadline = time.perf_counter() + budget_s
        if self.events_path.exists():
            for offset, event in read_events(self.events_path, self.offset):
                self.offset = offset  # advanced line by line: a dispatch that raises resumes after its event
                self._dispatch(event)
                count += 1
                if time.perf_counter() > deadline and not self.terminal:
                    QTimer.singleShot(0, self, self.poll)  # more to read: continue right after this turn
                    return count
        if not self.terminal and not pid_alive(self.pid):
            # one last read: the engine may have written its last lines just before exiting
            for offset, event in read_events(self.events_path, self.offset):
                self.offset = offset  # advanced line by line: a dispatch that raises resumes after its event
                self._dispatch(event)
            self._end_failed(self.last_error or "the engine process ended without finishing the run")
        if self.terminal:
            self._timer.stop()
        return count

    def _on_timer_timeout(self) -> None:
        self.poll()

    def cancel(self, grace_ms: int = CANCEL_GRACE_MS, terminate_grace_ms: int = TERMINATE_GRACE_MS) -> None:
        """No stdin to a process we did not start: SIGINT (the engine cancels cleanly), SIGTERM, SIGKILL."""
        if not self.running:
            return
        self._add_output("[studio] cancel requested (SIGINT)")
        self._signal(signal.SIGINT)
        QTimer.singleShot(grace_ms, self, lambda: self._signal(signal.SIGTERM))
        QTimer.singleShot(grace_ms + terminate_grace_ms, self,
                          lambda: self._signal(getattr(signal, "SIGKILL", signal.SIGTERM)))

    def _signal(self, sig: int) -> None:
        if self.running:
            try:
                os.kill(self.pid, sig)
            except OSError as exc:
                log.warning("could not signal engine pid %s: %s", self.pid, exc)
