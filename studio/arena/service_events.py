"""The arena widget's answers to the chat service's events (load progress, a loaded model, tokens and their live
numbers, a finished generation, ROUGE-L scores, errors, the service's exit): each hands the event to the
``ArenaSession`` and redraws what it names. A mixin of ``ArenaWidget`` (studio/arena/arena_widget.py), which
connects these slots to its ``ChatClient``; split from it so that the widget file holds the layout and the user's
actions."""
from __future__ import annotations

from typing import Any


class ServiceEvents:
    """The ``ChatClient`` slots of ``ArenaWidget``; they use its session, panes, client, status label, load queue
    and redraw methods."""

    session: Any
    client: Any
    panes: dict
    status_label: Any
    _load_queue: list
    _loading_key: str | None

    def _on_client_load_progressed(self, model: str, fraction: float) -> None:
        if model in self.panes:
            self.session.on_load_progress(model, fraction)
            self._refresh_pane(model)

    def _on_client_model_loaded(self, model: str, info: dict) -> None:
        self._finish_load(model)
        if model in self.panes and self.session.pane(model).choice is None:
            self.client.unload(model)  # its pane was closed while it loaded
        elif any(key == model for key, _choice in self._load_queue):
            pass  # the user picked another model meanwhile; its load, queued, replaces this one
        elif model in self.panes:
            self.session.on_loaded(model, info)
            self.status_label.setText(f"{self.session.pane(model).name} is loaded.")
            self._refresh_all()

    def _on_client_score_received(self, score_id: str, value: float) -> None:
        key = self.session.on_score(score_id, value)
        if key is not None:
            self._refresh_pane(key)

    def _send_score_requests(self) -> None:
        """ROUGE-L comes from the engine (the evaluation's own function), asked for after each change."""
        for request in self.session.take_score_requests():
            self.client.score(request.score_id, request.prediction, request.reference)

    def _on_client_error_reported(self, data: dict) -> None:
        request_id, model, message = data.get("request_id") or "", data.get("model") or "", data.get("message", "")
        if request_id and self.session.pane_of_request(request_id):
            self.session.on_request_error(request_id, message)
        elif model in self.panes and self.session.pane(model).load_state == "loading":
            self._finish_load(model)
            self.session.on_load_failed(model, message)
        else:
            self.status_label.setText(f"Chat service: {message}")
            return
        self._refresh_all()

    def _on_client_service_finished(self, exit_code: int, stderr_tail: str) -> None:
        last = next((line for line in reversed(stderr_tail.splitlines()) if line.strip()), "")
        message = f"the chat service stopped (exit code {exit_code}){': ' + last if last else ''}"
        self._load_queue.clear()
        self._loading_key = None
        if self.session.on_service_lost(message):
            self.status_label.setText(message[0].upper() + message[1:] + ". Press Load to start it again.")
            self._refresh_all()

    def _on_client_token_received(self, request_id: str, _model: str, text: str) -> None:
        key = self.session.on_token(request_id, text)
        if key is not None:
            self.panes[key].render_transcript(self.session.pane(key), self._reference_name())

    def _on_client_token_stats(self, request_id: str, live: dict) -> None:
        self.session.on_token(request_id, "", live)  # the text that follows redraws the pane

    def _on_client_generation_finished(self, request_id: str, data: dict) -> None:
        if self.session.on_done(request_id, data):
            self._refresh_all()
