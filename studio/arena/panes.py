"""One pane of the arena: the model picker, the model's name, size and precision, the loading progress, the
streamed conversation and the numbers under the last answer. It only presents a ``PaneState``; the arena widget
decides what happens."""
from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFrame, QHBoxLayout, QLabel, QMenu,
                               QProgressBar, QPushButton, QSizePolicy, QTextBrowser, QToolButton, QVBoxLayout,
                               QWidget)

from studio.arena.catalog import ModelChoice, custom_choice, find_label
from studio.arena.arena_state import PaneState
from studio.arena.turns import Turn
from studio.widgets.elided_label import ElidedLabel

ROLE_COLORS = {"teacher": "#7c3aed", "student": "#0284c7", "quantized": "#059669", "": "#64748b"}
PANE_STYLE = """
QFrame#arenaPane { border: 1px solid #d0d7de; border-radius: 8px; background: palette(base); }
QLabel#paneTitle { font-size: 15px; font-weight: 600; }
QLabel[chip="true"] { border-radius: 9px; padding: 1px 8px; color: white; font-size: 11px; }
QLabel#paneStats { color: #57606a; font-size: 11px; }
QLabel#paneError { color: #b42318; background: #fef3f2; border: 1px solid #fecdca; border-radius: 6px;
                   padding: 6px; }
QTextBrowser { border: none; background: transparent; }
QProgressBar { max-height: 6px; border: none; background: #eaeef2; border-radius: 3px; }
QProgressBar::chunk { background: #0969da; border-radius: 3px; }
"""


def _chip(text: str, color: str) -> QLabel:
    label = QLabel(text)
    label.setProperty("chip", True)
    label.setStyleSheet(f"background: {color};")
    return label


def turn_html(turn: Turn, reference_name: str, with_stats: bool = True, timings: bool = True) -> str:
    """One exchange as HTML: the user's message in a tinted block, the answer below, its numbers in grey."""
    user = html.escape(turn.user).replace("\n", "<br>")
    answer = html.escape(turn.answer).replace("\n", "<br>")
    if turn.is_open:
        answer += '<span style="color:#0969da;">&#9646;</span>'  # a cursor while tokens stream in
    elif not turn.answer.strip():  # spaces or newlines only would show as nothing at all
        answer = ('<i style="color:#8c959f;">(no answer)</i>' if not turn.answer else
                  f'<i style="color:#8c959f;">(only whitespace: {len(turn.answer)} characters)</i>')
    parts = [f'<table width="100%" cellpadding="6" style="background:#f1f5f9; border-radius:6px;"><tr><td>'
             f'<span style="color:#57606a; font-size:11px;">YOU</span><br>{user}</td></tr></table>',
             f'<p style="margin-top:6px; margin-bottom:2px;">{answer}</p>']
    stats = turn.stats(reference_name, timings=timings) if with_stats else ""
    if stats:
        parts.append(f'<p style="color:#6e7781; font-size:11px; margin-top:0;">{html.escape(stats)}</p>')
    if turn.status == "error":
        parts.append(f'<p style="color:#b42318;">{html.escape(turn.error)}</p>')
    return "".join(parts)


class ChatPane(QFrame):
    """A model's column in the arena."""

    load_requested = Signal(str, object)  # pane key, ModelChoice
    reference_toggled = Signal(str, bool)  # pane key, is the ROUGE-L reference
    draft_chosen = Signal(str, object)  # pane key, the key of the pane whose model drafts for it (None: none)

    def __init__(self, key: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._blind = False  # a blind round hides the answers' speeds (set by render)
        self.key = key
        self._choices: list[ModelChoice] = []
        self._known_labels: set[str] = set()  # every catalog label offered so far: a vanished one is not a path
        self.setObjectName("arenaPane")
        self.setStyleSheet(PANE_STYLE)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.setSpacing(6)
        self.picker_row = self._build_picker()
        layout.addWidget(self.picker_row)
        layout.addLayout(self._build_title())
        progress_row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setTextVisible(False)
        self.progress.hide()
        progress_row.addWidget(self.progress, 1)
        self.status_chip = _chip("", "#9a6700")
        progress_row.addWidget(self.status_chip)
        layout.addLayout(progress_row)
        self.error_label = QLabel()
        self.error_label.setObjectName("paneError")
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()
        layout.addWidget(self.error_label)
        self.transcript = QTextBrowser()
        self.transcript.setOpenLinks(False)
        layout.addWidget(self.transcript, 1)
        self.stats_label = QLabel()
        self.stats_label.setObjectName("paneStats")
        self.stats_label.setWordWrap(True)
        layout.addWidget(self.stats_label)

    def _build_picker(self) -> QWidget:
        row = QWidget()
        # the picker has a line of its own: beside its buttons, three panes in a 1024-pixel window left it ten
        # characters, and every pane of one run read "demo-quick…"
        column = QVBoxLayout(row)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(4)
        box = QHBoxLayout()
        box.setContentsMargins(0, 0, 0, 0)
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.model_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        # long run names must not force a wide window: three panes fit a laptop screen
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(5)  # three panes side by side in a 1024-pixel window
        self.model_combo.setToolTip("A model of the run history, or type a hub id, a folder or a .gguf file.")
        self.model_combo.lineEdit().setPlaceholderText("hub id, folder or .gguf file")
        self.model_combo.currentIndexChanged.connect(self.show_name_start)
        self.model_combo.editTextChanged.connect(lambda _text: self._show_problem(""))  # a new pick, a new verdict
        column.addWidget(self.model_combo)
        column.addLayout(box)
        browse = QToolButton()
        browse.setText("…")
        browse.setToolTip("Pick a model folder or a GGUF file")
        menu = QMenu(browse)
        menu.addAction("Model folder…", self._on_browse_folder_triggered)
        menu.addAction("GGUF file…", self._on_browse_gguf_triggered)
        browse.setMenu(menu)
        browse.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        box.addWidget(browse)
        self.four_bit = QCheckBox("4-bit")
        self.four_bit.setToolTip("Load the weights in 4-bit NF4 (bitsandbytes)")
        box.addWidget(self.four_bit)
        self.draft_combo = QComboBox()  # speculative decoding: e.g. the teacher's pane with a student drafting
        self.draft_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.draft_combo.setMinimumContentsLength(5)
        self.draft_combo.setToolTip("Answer with another pane's model as the draft (speculative decoding): the "
                                    "answers stay this model's; the footer shows tokens/s and the share of draft "
                                    "tokens kept")
        self.draft_combo.addItem("no draft", None)
        self.draft_combo.currentIndexChanged.connect(self._on_draft_combo_changed)
        box.addWidget(self.draft_combo)
        box.addStretch(1)
        self.load_button = QPushButton("Load")
        self.load_button.setObjectName("compactButton")
        self.load_button.clicked.connect(self._on_load_button_clicked)
        box.addWidget(self.load_button)
        return row

    def _build_title(self) -> QVBoxLayout:
        column = QVBoxLayout()
        column.setSpacing(2)
        # the whole name when it fits, elided in the middle when not (its ends tell "… · student_kd" from
        # "… · student_kd (4-bit)"), the name and the source in the tooltip; never widens the window
        self.title = ElidedLabel("No model")
        self.title.setObjectName("paneTitle")
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        self.reference_box = QCheckBox("reference")
        self.reference_box.setToolTip("Score the other panes' answers (ROUGE-L) against this pane's")
        self.reference_box.toggled.connect(self._on_reference_box_toggled)
        top.addWidget(self.reference_box)
        column.addLayout(top)
        # fixed chips whose text changes: recreating widgets on every redraw would leave orphans until the
        # event loop runs their deferred deletion
        self.size_chip, self.precision_chip = _chip("", "#57606a"), _chip("", ROLE_COLORS[""])
        chips = QHBoxLayout()
        chips.addWidget(self.size_chip)
        chips.addWidget(self.precision_chip)
        chips.addStretch(1)
        column.addLayout(chips)
        return column

    # ------------------------------------------------------------------ model picking
    def set_choices(self, choices: list[ModelChoice], selected: ModelChoice | None = None) -> None:
        """Offer ``choices``; the picked entry stays picked (found by its label: the list may have changed
        under it as runs came and went), or ``selected`` is picked."""
        current = self.model_combo.currentText()
        self._known_labels.update(c.label for c in self._choices)
        self._choices = list(choices)
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for choice in self._choices:
            self.model_combo.addItem(choice.label, choice.source)
            self.model_combo.setItemData(self.model_combo.count() - 1, choice.source, Qt.ItemDataRole.ToolTipRole)
        if selected is not None and selected in self._choices:
            self.model_combo.setCurrentIndex(self._choices.index(selected))
        else:
            kept = find_label(self._choices, current)
            self.model_combo.setCurrentIndex(self._choices.index(kept) if kept is not None else -1)
            self.model_combo.setEditText(current)
        self.model_combo.blockSignals(False)
        self.show_name_start()

    def show_name_start(self, *_: object) -> None:
        """A narrow pane shows the start of a long model name (QComboBox scrolls to its end)."""
        if not self.model_combo.lineEdit().hasFocus():
            self.model_combo.lineEdit().setCursorPosition(0)

    def current_choice(self) -> ModelChoice | None:
        """The catalog entry named in the box, or a custom one for typed text; None when empty or when the text
        names a model that is no longer in the list (see :meth:`stale_label`)."""
        text = self.model_combo.currentText().strip()
        choice = find_label(self._choices, text)
        if choice is not None:
            if self.four_bit.isChecked() and not choice.load_in_4bit:
                choice = ModelChoice(**{**choice.to_dict(), "load_in_4bit": True,
                                        "label": f"{choice.label} (4-bit)", "precision": "4-bit nf4"})
            return choice
        return custom_choice(text, self.four_bit.isChecked()) if text and not self.stale_label() else None

    def stale_label(self) -> str:
        """The box's text when it is the label of a model the list no longer has (its run was deleted), else ''."""
        text = self.model_combo.currentText().strip()
        gone = text in self._known_labels and find_label(self._choices, text) is None
        return text if gone and not Path(text).expanduser().exists() else ""

    def _on_browse_folder_triggered(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder")
        if folder:
            self.model_combo.setEditText(folder)

    def _on_browse_gguf_triggered(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "GGUF file", str(Path.home()), "GGUF models (*.gguf)")
        if path:
            self.model_combo.setEditText(path)

    def _on_load_button_clicked(self) -> None:
        choice = self.current_choice()
        if choice is not None:
            self.load_requested.emit(self.key, choice)
        else:
            self._show_problem("")

    def stale_text(self) -> str:
        """Why the picked model cannot be loaded when its label names a model that is gone, else ''."""
        stale = self.stale_label()
        return (f"“{stale}” is no longer in the run history (its run was deleted or moved); pick another model "
                "above." if stale else "")

    def _show_problem(self, failure: str) -> None:
        """A failed load's reason, else a vanished model's (never another run's model loaded in its place)."""
        text = f"Could not load this model: {failure}" if failure else self.stale_text()
        self.error_label.setText(text)
        self.error_label.setVisible(bool(text))

    def set_draft_choices(self, options: list[tuple[str, str]], current: str | None) -> None:
        """Offer the other loaded panes (key, label) as this pane's draft; ``current`` stays picked."""
        self.draft_combo.blockSignals(True)
        self.draft_combo.clear()
        self.draft_combo.addItem("no draft", None)
        for key, label in options:
            self.draft_combo.addItem(f"draft: {label}", key)
        found = self.draft_combo.findData(current) if current else 0
        self.draft_combo.setCurrentIndex(max(found, 0))
        self.draft_combo.setEnabled(bool(options))
        self.draft_combo.blockSignals(False)

    def _on_draft_combo_changed(self, _index: int) -> None:
        self.draft_chosen.emit(self.key, self.draft_combo.currentData())

    def _on_reference_box_toggled(self, checked: bool) -> None:
        self.reference_toggled.emit(self.key, checked)

    # ------------------------------------------------------------------ presentation
    def render(self, state: PaneState, label: str, *, blind: bool, is_reference: bool, reference_name: str) -> None:
        """Show ``state``; in blind mode the name, size, precision and picker are hidden behind ``label``."""
        self.picker_row.setVisible(not blind)
        text = label if state.choice else "No model — pick one above"
        self.title.set_full_text(text, text if blind or state.choice is None else
                                 f"{state.name}\n{state.choice.source}")
        self._render_chips(state, blind, is_reference)
        self.reference_box.blockSignals(True)
        self.reference_box.setChecked(is_reference)
        self.reference_box.setVisible(not blind and state.choice is not None)
        self.reference_box.blockSignals(False)
        loading = state.load_state == "loading"
        self.progress.setVisible(loading)
        self.progress.setValue(int(100 * state.load_fraction))
        self.load_button.setEnabled(not loading and not state.busy)
        self._show_problem(state.error if state.load_state == "failed" else "")
        self._blind = blind  # the transcript's speeds stay hidden until the reveal (token updates come between)
        self.render_transcript(state, reference_name)

    def _render_chips(self, state: PaneState, blind: bool, is_reference: bool) -> None:
        shown = not blind and state.choice is not None
        role = "quantized" if "4-bit" in state.precision else (state.choice.role if state.choice else "")
        self.size_chip.setText(state.size)
        self.precision_chip.setText(state.precision)
        self.precision_chip.setStyleSheet(f"background: {ROLE_COLORS.get(role, ROLE_COLORS[''])};")
        self.status_chip.setText(f"loading {int(100 * state.load_fraction)} %")
        self.size_chip.setVisible(shown)
        self.precision_chip.setVisible(shown)
        self.status_chip.setVisible(shown and state.load_state == "loading")

    def render_transcript(self, state: PaneState, reference_name: str) -> None:
        """Redraw the conversation (cheap at chat sizes) and keep the view pinned to the newest text."""
        bar = self.transcript.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 4
        if state.turns:
            last_index = len(state.turns) - 1  # the last answer's numbers are in the footer
            self.transcript.setHtml("".join(turn_html(t, reference_name, i != last_index, not self._blind)
                                            for i, t in enumerate(state.turns)))
        elif state.load_state == "loaded":
            self.transcript.setHtml('<p style="color:#8c959f;">Ready. Type a prompt below.</p>')
        elif state.load_state == "loading":
            self.transcript.setHtml('<p style="color:#8c959f;">Loading the model…</p>')
        else:
            self.transcript.clear()
        if at_bottom:
            self.transcript.moveCursor(QTextCursor.MoveOperation.End)
            bar.setValue(bar.maximum())
        last = state.turns[-1] if state.turns else None
        live = last.stats(reference_name, timings=not self._blind) if last else ""  # speed, draft: live
        self.stats_label.setText(live if last and not last.is_open else
                                 "answering…" + (f" · {live}" if live else "") if last else "")
