"""The studio's client of the engine's chat service (``python -m engine chat``) speaking its JSON-lines
protocol: commands go to stdin, events come back on stdout and are turned into Qt signals.

Process handling follows Frescobaldi and Spyder: the GUI thread never blocks on the service; ``close`` sends a
``quit`` line, then terminates, then kills. stderr (the engine's human-readable log) is kept as a short tail to
explain a crash.
"""
from __future__ import annotations

import json
import logging
import sys

from PySide6.QtCore import QObject, Signal

from engine.contract.protocol import Event, ProtocolError, command_line
from studio.process import SOURCE_CHECKOUT, ChildProcess, process_environment

log = logging.getLogger(__name__)

STDERR_TAIL = 4000  # characters of the service's log kept to explain a crash
QUIT_GRACE_MS = 3000  # after `quit`, this long before terminate; as long again before kill


def engine_chat_command(engine_python: str | None = None) -> list[str]:
    """The command line that starts the chat service with the given interpreter."""
    return [engine_python or sys.executable, "-m", "engine", "chat"]


class ChatClient(QObject):
    """One chat service process. Signals carry the pane's model name as the service knows it."""

    service_started = Signal()
    service_finished = Signal(int, str)  # exit code, tail of stderr
    load_progressed = Signal(str, float)  # model, fraction
    model_loaded = Signal(str, object)  # model, the `loaded` event's data
    model_unloaded = Signal(str)
    token_received = Signal(str, str, str)  # request id, model, text
    token_stats = Signal(str, object)  # request id, the token's live numbers (tokens_per_s, draft_acceptance)
    generation_finished = Signal(str, object)  # request id, the `done` event's data
    score_received = Signal(str, float)  # score id, the engine's ROUGE-L
    error_reported = Signal(object)  # the `error` event's data (message, request_id, model)
    event_received = Signal(object)  # every Event, for logging and tests

    def __init__(self, command: list[str] | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.command = list(command or engine_chat_command())
        self._process: ChildProcess | None = None
        self._stderr = ""
        self._pending: list[str] = []  # commands written before the process started

    # ------------------------------------------------------------------ lifetime
    def is_running(self) -> bool:
        return self._process is not None and self._process.running

    def start(self) -> None:
        """Start the service (a no-op while it runs)."""
        if self.is_running():
            return
        process = ChildProcess(self)
        process.stdout_lines.connect(self._on_process_stdout_lines)
        process.stderr_lines.connect(self._on_process_stderr_lines)
        process.started.connect(self._on_process_started)
        process.exited.connect(self._on_process_exited)
        process.failed_to_start.connect(self._on_process_failed_to_start)
        self._process, self._stderr = process, ""
        log.info("starting the chat service: %s", " ".join(self.command))
        process.start(self.command[0], self.command[1:], env=process_environment(source_checkout=True),
                      workdir=str(SOURCE_CHECKOUT))

    def close(self, wait_ms: int = 0) -> None:
        """Ask the service to quit, then terminate, then kill; ``wait_ms`` > 0 blocks (application exit)."""
        process = self._process
        if process is None or not process.running:
            return

        def ask() -> None:
            self._send(command_line("quit"))
            process.close_stdin()  # EOF also ends the service, should the quit line be lost

        if wait_ms > 0:
            ask()
            process.stop_now(wait_ms)
            return
        process.stop(ask, QUIT_GRACE_MS, QUIT_GRACE_MS)

    # ------------------------------------------------------------------ commands
    def load(self, model: str, source: str, load_in_4bit: bool = False) -> None:
        self.start()
        self._send(command_line("load", model=model, source=source, load_in_4bit=load_in_4bit))

    def unload(self, model: str) -> None:
        self._send(command_line("unload", model=model))

    def generate(self, request_id: str, model: str, messages: list[dict], sampling: dict,
                 draft: str | None = None) -> None:
        """Ask ``model`` for an answer; ``draft``: another loaded model drafting for it (speculative decoding)."""
        self._send(command_line("generate", request_id=request_id, model=model, messages=messages,
                                sampling=sampling, **({"draft": draft} if draft else {})))

    def score(self, score_id: str, prediction: str, reference: str) -> None:
        """Ask for the evaluation's own ROUGE-L (engine.evaluation.scores); the answer comes as ``score_received``."""
        self.start()
        self._send(command_line("score", id=score_id, prediction=prediction, reference=reference))

    def stop(self, request_id: str | None = None) -> None:
        """Stop one generation, or all of them."""
        self._send(command_line("stop", **({"request_id": request_id} if request_id else {})))

    def _send(self, line: str) -> None:
        if self._process is None:
            return
        if not self._process.write(line):
            self._pending.append(line)

    # ------------------------------------------------------------------ process slots
    def _on_process_started(self) -> None:
        pending, self._pending = self._pending, []
        for line in pending:
            self._process.write(line)
        self.service_started.emit()

    def _on_process_stdout_lines(self, lines: list) -> None:
        for raw in lines:
            if raw.strip():
                self._dispatch(raw.decode("utf-8", errors="replace"))

    def _on_process_stderr_lines(self, lines: list) -> None:
        self._stderr = (self._stderr + "\n".join(lines) + "\n")[-STDERR_TAIL:]

    def _on_process_failed_to_start(self, reason: str) -> None:
        message = f"cannot start the chat service ({' '.join(self.command)}): {reason}"
        self.error_reported.emit({"message": message, "request_id": "", "model": ""})
        self.service_finished.emit(-1, message)

    def _on_process_exited(self, exit_code: int, _crashed: bool) -> None:
        self._pending.clear()
        self.service_finished.emit(exit_code, self._stderr)

    # ------------------------------------------------------------------ events
    def _dispatch(self, line: str) -> None:
        try:
            event = Event.from_json(line)
        except ProtocolError:
            log.debug("not an event from the chat service: %s", line[:200])
            return
        self.event_received.emit(event)
        data = event.data
        if event.type == "token":
            live = {k: data[k] for k in ("tokens_per_s", "draft_acceptance") if data.get(k) is not None}
            if live:  # before the text: the pane redraws once per token, with the numbers current
                self.token_stats.emit(str(data.get("request_id", "")), live)
            self.token_received.emit(str(data.get("request_id", "")), str(data.get("model", "")),
                                     str(data.get("text", "")))
        elif event.type == "done" and data.get("request_id"):
            self.generation_finished.emit(str(data["request_id"]), data)
        elif event.type == "loaded":
            self.model_loaded.emit(str(data.get("model", "")), data)
        elif event.type == "progress":
            model = data.get("model") or str(data.get("stage", "")).removeprefix("load ").strip()
            self.load_progressed.emit(model, float(data.get("fraction") or 0.0))
        elif event.type == "score" and isinstance(data.get("rougeL"), (int, float)):
            self.score_received.emit(str(data.get("id", "")), float(data["rougeL"]))
        elif event.type == "error":
            self.error_reported.emit(data)
        elif event.type == "log" and data.get("action") == "unloaded":
            self.model_unloaded.emit(str(data.get("model", "")))

    @staticmethod
    def describe(event: Event) -> str:
        """One line for a log view."""
        return f"{event.type}: {json.dumps(event.data, ensure_ascii=False)[:200]}"
