"""The chat arena: up to three models answer the same conversation side by side, streamed from the engine's chat
service. The widget wires the panes, the shared controls and the ``ChatClient`` to an ``ArenaSession`` (which
holds every rule) and redraws what the session says changed; the chat service's events are handled by
``ServiceEvents`` (studio/arena/service_events.py).

Mount it as a tab: ``ArenaWidget(store=RunStore(), engine_python=sys.executable)``.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, Qt, Signal
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QSplitter, QVBoxLayout, QWidget)

from studio.arena import catalog as catalog_mod
from studio.arena import prompt_presets as presets_mod
from studio.arena.catalog import ModelChoice
from studio.arena.chat_client import ChatClient, engine_chat_command
from studio.arena.controls import PromptBar, SamplingBox, TopBar, VoteBar
from studio.arena.export import write_exports
from studio.arena.panes import ChatPane
from studio.arena.service_events import ServiceEvents
from studio.arena.arena_state import ArenaSession
from studio.arena.votes import append_vote, read_votes, tally, votes_path
from studio.keyboard import EnterSends

log = logging.getLogger(__name__)
MAX_PANES = 3


class ArenaWidget(ServiceEvents, QWidget):
    """Side-by-side chat with teacher, student and 4-bit student."""

    vote_recorded = Signal(object)  # the vote record, after it was written
    exported = Signal(str, str)  # Markdown path, JSON path

    def __init__(self, store: Any = None, engine_python: str | None = None, *, chat_command: list[str] | None = None,
                 pane_count: int = MAX_PANES, rng: random.Random | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.session = ArenaSession(MAX_PANES, rng=rng)
        self.client = ChatClient(chat_command or engine_chat_command(engine_python), self)
        self.choices: list[ModelChoice] = []
        self._load_queue: list[tuple[str, ModelChoice]] = []  # (pane key, model) waiting for the service
        self._loading_key: str | None = None
        self.presets: list[presets_mod.Preset] = []
        self._build()
        self._connect()
        self.pane_count.setValue(max(1, min(MAX_PANES, pane_count)))
        self.refresh_models()
        self._refresh_all()
        app = QCoreApplication.instance()
        if app is not None:  # a child widget gets no closeEvent when the main window closes
            app.aboutToQuit.connect(self.shutdown)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 10, 10, 10)
        layout.addWidget(self._build_top_bar())
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setHandleWidth(8)
        self.panes: dict[str, ChatPane] = {}
        for state in self.session.panes:
            pane = ChatPane(state.key)
            self.panes[state.key] = pane
            self.splitter.addWidget(pane)
        layout.addWidget(self.splitter, 1)
        self.vote_bar = VoteBar()
        self.vote_bar.hide()
        layout.addWidget(self.vote_bar)
        layout.addLayout(self._build_bottom())
        self.status_label = QLabel()
        self.status_label.setStyleSheet("color: #57606a;")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)

    def _build_top_bar(self) -> TopBar:
        bar = self.top_bar = TopBar(MAX_PANES)  # short names for the controls the arena drives (and the tests use)
        self.run_combo, self.pane_count, self.load_all_button = bar.run_combo, bar.pane_count, bar.load_all_button
        self.blind_box, self.clear_button, self.export_button = bar.blind_box, bar.clear_button, bar.export_button
        return bar

    def _build_bottom(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.prompt_bar = PromptBar(self.session.system_prompt)
        row.addWidget(self.prompt_bar, 1)
        self.sampling_box = SamplingBox()
        row.addWidget(self.sampling_box)
        bar = self.prompt_bar  # short names for the controls the arena drives (and the tests use)
        self.system_edit, self.preset_combo, self.random_button = bar.system_edit, bar.preset_combo, bar.random_button
        self.prompt_edit, self.send_button, self.stop_button = bar.prompt_edit, bar.send_button, bar.stop_button
        self.continue_box = bar.continue_box
        return row

    def _connect(self) -> None:
        for pane in self.panes.values():
            pane.load_requested.connect(self._on_pane_load_requested)
            pane.reference_toggled.connect(self._on_pane_reference_toggled)
            pane.draft_chosen.connect(self._on_pane_draft_chosen)
        self.client.load_progressed.connect(self._on_client_load_progressed)
        self.client.model_loaded.connect(self._on_client_model_loaded)
        self.client.token_received.connect(self._on_client_token_received)
        self.client.token_stats.connect(self._on_client_token_stats)
        self.client.generation_finished.connect(self._on_client_generation_finished)
        self.client.score_received.connect(self._on_client_score_received)
        self.client.error_reported.connect(self._on_client_error_reported)
        self.client.service_finished.connect(self._on_client_service_finished)
        self.run_combo.currentIndexChanged.connect(self._on_run_combo_changed)
        self.pane_count.valueChanged.connect(self._on_pane_count_changed)
        self.load_all_button.clicked.connect(self._on_load_all_clicked)
        self.blind_box.toggled.connect(self._on_blind_box_toggled)
        self.clear_button.clicked.connect(self._on_clear_clicked)
        self.export_button.clicked.connect(self._on_export_clicked)
        self.preset_combo.activated.connect(self._on_preset_combo_activated)
        self.random_button.clicked.connect(self._on_random_clicked)
        self.send_button.clicked.connect(self._on_send_clicked)
        self.stop_button.clicked.connect(self._on_stop_clicked)
        self.vote_bar.vote_cast.connect(self._on_vote_bar_vote_cast)
        self.sampling_box.sampling_changed.connect(self._on_sampling_box_changed)
        QShortcut(QKeySequence("Ctrl+Return"), self.prompt_edit, activated=self._on_send_clicked)
        EnterSends(self.prompt_edit, self._on_send_clicked, self.send_button.isEnabled)

    # ------------------------------------------------------------------ public API (also used by the tests)
    def refresh_models(self) -> None:
        """Re-read the run history: the runs, every model they made, and the demo models. The main window calls
        it whenever a run starts, finishes or saves a model; the run and the models the user picked stay picked
        (a model whose run is gone is named as gone, never replaced by another)."""
        first = not self.choices
        self.choices = catalog_mod.catalog(self.store)
        kept = self.top_bar.set_runs(catalog_mod.list_runs(self.store), keep=not first)
        if first:
            self._on_run_combo_changed(self.run_combo.currentIndex())
        else:  # new entries in each pane's list, nothing re-picked
            for state in self.session.panes:
                self.panes[state.key].set_choices(self.choices)
            if not kept:  # the run shown was deleted: another run's presets and votes
                self._show_run_extras()
        self._refresh_all()

    def load_model(self, key: str, choice: ModelChoice) -> None:
        """Load ``choice`` into pane ``key`` (replacing its model and conversation)."""
        self.panes[key].model_combo.setEditText(choice.label)
        self.panes[key].show_name_start()
        self._on_pane_load_requested(key, choice)

    def send(self, prompt: str) -> list[str]:
        """Send ``prompt`` to every loaded pane; returns the request ids."""
        self.prompt_edit.setPlainText(prompt)
        return self._on_send_clicked()

    def stop(self) -> None:
        self._on_stop_clicked()

    def vote(self, letter: str | None) -> dict:
        """Vote in a blind round (None = tie); writes the vote next to the run and returns it."""
        record = self.session.vote(letter)
        run_paths = [p.choice.run_path for p in self.session.panes if p.choice is not None]
        path = votes_path(run_paths)
        record["run_id"] = next((p.choice.run_id for p in self.session.panes if p.choice and p.choice.run_id), "")
        append_vote(path, record)
        self.status_label.setText(f"Vote saved to {path}.")
        self._refresh_all()
        self.vote_recorded.emit(record)
        return record

    def export_to(self, path: str | Path) -> tuple[Path, Path]:
        md_path, json_path = write_exports(self.session, path)
        self.status_label.setText(f"Exported to {md_path} and {json_path}.")
        self.exported.emit(str(md_path), str(json_path))
        return md_path, json_path

    def shutdown(self, wait_ms: int = 3000) -> None:
        """Stop the chat service (quit, then terminate, then kill)."""
        self.client.close(wait_ms=wait_ms)

    def closeEvent(self, event: QCloseEvent) -> None:  # Qt's name
        self.shutdown()
        super().closeEvent(event)

    # ------------------------------------------------------------------ slots: panes and models
    def _on_run_combo_changed(self, _index: int) -> None:
        run_path = self.run_combo.currentData() or None
        pool = [c for c in self.choices if c.run_path == run_path] if run_path else []
        lineup = catalog_mod.default_lineup(pool + [c for c in self.choices if not c.run_id], MAX_PANES)
        for index, state in enumerate(self.session.panes):
            selected = lineup[index] if index < len(lineup) and state.choice is None else None
            self.panes[state.key].set_choices(self.choices, selected)
        self._show_run_extras()

    def _show_run_extras(self) -> None:
        """The chosen run's prompt presets and vote tally."""
        self.presets = presets_mod.prompt_presets(self.run_combo.currentData() or None)
        self.prompt_bar.set_presets(self.presets)
        self._refresh_votes()

    def _on_pane_count_changed(self, count: int) -> None:
        for index, state in enumerate(self.session.panes):
            visible = index < count
            self.panes[state.key].setVisible(visible)
            self._load_queue = [(k, c) for k, c in self._load_queue if visible or k != state.key]
            if not visible and state.choice is not None:
                if state.ready:
                    self.client.unload(state.key)
                self.session.remove_model(state.key)
        self._refresh_all()

    def _on_load_all_clicked(self) -> None:
        for state in self.session.panes[: self.pane_count.value()]:
            choice = self.panes[state.key].current_choice()
            if choice is not None:
                self._on_pane_load_requested(state.key, choice)
            else:
                self._refresh_pane(state.key)  # a model whose run is gone says so

    def _on_pane_load_requested(self, key: str, choice: ModelChoice) -> None:
        if self.session.pane(key).busy:
            self.status_label.setText("That pane is still answering; stop it before changing its model.")
            return
        self.session.set_model(key, choice)
        if self.session.blind is not None:
            self.session.shuffle_blind()
        self._load_queue = [(k, c) for k, c in self._load_queue if k != key] + [(key, choice)]
        self._send_next_load()
        self._refresh_all()

    def _send_next_load(self) -> None:
        """Loads go to the service one at a time: concurrent from_pretrained calls in one process are not
        thread-safe in transformers (meta-device initialisation is global), and one at a time keeps the memory
        peak to one model's."""
        if self._loading_key is not None or not self._load_queue:
            return
        key, choice = self._load_queue.pop(0)
        self._loading_key = key
        self.client.load(key, choice.source, choice.load_in_4bit)
        self.status_label.setText(f"Loading {choice.label}…")

    def _finish_load(self, key: str) -> None:
        if key == self._loading_key:
            self._loading_key = None
            self._send_next_load()

    def _on_pane_reference_toggled(self, key: str, checked: bool) -> None:
        self.session.set_reference(key if checked else None)
        self._refresh_all()

    # ------------------------------------------------------------------ slots: conversation
    def _on_send_clicked(self) -> list[str]:
        self.session.system_prompt = self.system_edit.text()
        self.session.sampling = self.sampling_box.sampling()
        try:
            requests = self.session.start_turn(self.prompt_edit.toPlainText())
        except (ValueError, RuntimeError) as exc:
            self.status_label.setText(str(exc)[0].upper() + str(exc)[1:])
            return []
        sampling = self.session.sampling.to_dict()
        for key, request_id, messages in requests:
            self.client.generate(request_id, key, messages, sampling, draft=self.session.draft_of(key))
        self.prompt_edit.clear()
        self.status_label.setText("")
        self._refresh_all()
        # a click on Send disables it while the models answer, and Qt hands focus to the next field: typing
        # the next question belongs in the prompt box
        self.prompt_edit.setFocus(Qt.FocusReason.OtherFocusReason)
        return [request_id for _key, request_id, _messages in requests]

    def _on_stop_clicked(self) -> None:
        if self.session.stop_all():
            self.client.stop()  # one command stops every generation at once

    def _on_pane_draft_chosen(self, key: str, draft: str | None) -> None:
        self.session.set_draft(key, draft)
        self._refresh_pane(key)

    def _on_clear_clicked(self) -> None:
        if self.session.busy:
            self.client.stop()
        self.session.clear()
        self._refresh_all()

    def _on_export_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export the conversation (Markdown and JSON)",
                                              str(Path.home() / "arena.md"), "Markdown (*.md)")
        if path:
            self.export_to(path)

    def _on_preset_combo_activated(self, index: int) -> None:
        """A preset is a new question: a fresh comparison (earlier turns would steer the answers), unless the
        user asked to continue the conversation."""
        if index <= 0:
            return
        if not self.continue_box.isChecked() and any(p.turns for p in self.session.panes):
            self._on_clear_clicked()
            self.status_label.setText("A fresh comparison: the conversations were cleared (tick “Continue "
                                      "conversation” to ask presets as follow-ups).")
        self.prompt_edit.setPlainText(self.presets[index - 1].prompt)
        self.prompt_edit.setFocus(Qt.FocusReason.OtherFocusReason)

    def _on_random_clicked(self) -> None:
        if self.presets:
            index = random.randrange(len(self.presets))
            self.preset_combo.setCurrentIndex(index + 1)
            self._on_preset_combo_activated(index + 1)

    def _on_sampling_box_changed(self, sampling: object) -> None:
        self.session.sampling = sampling

    # ------------------------------------------------------------------ slots: blind mode
    def _on_blind_box_toggled(self, checked: bool) -> None:
        self.session.set_blind(checked)
        self.vote_bar.setVisible(checked)
        self._refresh_all()

    def _on_vote_bar_vote_cast(self, letter: str | None) -> None:
        # the vote disables the button that has focus; Qt would pass focus on to the next field (the system
        # prompt, all of it selected, so the next key replaced it): the prompt box is where typing goes next
        self.prompt_edit.setFocus(Qt.FocusReason.OtherFocusReason)
        try:
            self.vote(letter)
        except RuntimeError as exc:
            self.status_label.setText(str(exc))
        self.system_edit.deselect()
        self.prompt_edit.setFocus(Qt.FocusReason.OtherFocusReason)

    def _refresh_votes(self) -> None:
        run_paths = [p.choice.run_path for p in self.session.panes if p.choice is not None]
        if not any(run_paths):
            run_paths = [self.run_combo.currentData() or ""]
        self.vote_bar.set_tally(tally(read_votes(votes_path(run_paths))))

    # ------------------------------------------------------------------ redraw
    def _reference_name(self) -> str:
        if self.session.reference_key is None or self.session.names_hidden():
            return ""
        return self.session.label(self.session.reference_key)

    def _refresh_pane(self, key: str) -> None:
        others = [(p.key, self.session.label(p.key)) for p in self.session.ready_panes() if p.key != key]
        self.panes[key].set_draft_choices(others, self.session.draft_of(key))
        self.panes[key].render(self.session.pane(key), self.session.label(key), blind=self.session.names_hidden(),
                               is_reference=key == self.session.reference_key, reference_name=self._reference_name())

    def _refresh_all(self) -> None:
        self._send_score_requests()
        for index, key in enumerate(self.session.display_order()):
            if self.splitter.indexOf(self.panes[key]) != index:
                self.splitter.insertWidget(index, self.panes[key])
            self._refresh_pane(key)
        busy, ready = self.session.busy, bool(self.session.ready_panes())
        self.send_button.setEnabled(ready and not busy)
        self.stop_button.setEnabled(busy)
        if self.session.blind is not None:
            blind = self.session.blind
            winner = blind.winner
            result = "" if not blind.revealed else "Tie — names revealed." if winner == "tie" else \
                f"{self.session.pane(winner).name} ({blind.letter(winner)}) won — names revealed."
            letters = [blind.letter(k) for k in blind.order]
            self.vote_bar.set_state(letters, self.session.can_vote(), result)
            self._refresh_votes()
