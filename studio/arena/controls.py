"""The arena's shared controls: the top bar (run, panes, blind mode, clear, export), the prompt bar (system
prompt, held-out presets, prompt, Send and Stop), the sampling settings every pane uses, and the blind-mode vote
bar with its tally. They present values and emit signals; the arena widget owns the session they feed."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QPlainTextEdit, QPushButton, QSpinBox, QToolButton, QVBoxLayout, QWidget)

from studio.arena.prompt_presets import Preset
from studio.arena.arena_state import LETTERS
from studio.arena.turns import Sampling
from studio.arena.votes import PairTally


class TopBar(QWidget):
    """Which run's models and prompts, how many panes, load all, blind mode, clear and export."""

    def __init__(self, max_panes: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Run:"))
        self.run_combo = QComboBox()
        self.run_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.run_combo.setMinimumContentsLength(12)
        self.run_combo.setToolTip("Whose models and held-out prompts to offer")
        row.addWidget(self.run_combo)
        row.addWidget(QLabel("Panes:"))
        self.pane_count = QSpinBox(minimum=1, maximum=max_panes)
        row.addWidget(self.pane_count)
        self.load_all_button = QPushButton("Load models")
        self.load_all_button.setToolTip("Load the model picked in every pane")
        row.addWidget(self.load_all_button)
        row.addStretch(1)
        self.blind_box = QCheckBox("Blind mode")
        self.blind_box.setToolTip("Hide the names behind A/B/C in random order until you vote for the best answer")
        row.addWidget(self.blind_box)
        self.clear_button = QPushButton("Clear")
        self.export_button = QPushButton("Export…")
        row.addWidget(self.clear_button)
        row.addWidget(self.export_button)

    def set_runs(self, runs: list, keep: bool) -> bool:
        """List ``runs`` (records, newest first) after "no run"; with ``keep`` the run shown stays shown. Returns
        whether it did (False: the newest run, or no run, is shown instead). Emits no signal."""
        kept = self.run_combo.currentData()
        self.run_combo.blockSignals(True)
        self.run_combo.clear()
        self.run_combo.addItem("no run (demo data)", "")
        for record in runs:
            self.run_combo.addItem(f"{record.name} — {record.id}", str(record.path))
        index = self.run_combo.findData(kept) if keep else -1
        self.run_combo.setCurrentIndex(index if index >= 0 else 1 if runs else 0)
        self.run_combo.blockSignals(False)
        return index >= 0


class PromptBar(QWidget):
    """System prompt, held-out prompt presets, the prompt box, Send and Stop."""

    def __init__(self, system_prompt: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        self.system_edit = QLineEdit(system_prompt)
        self.system_edit.setPlaceholderText("System prompt (empty: none)")
        self.system_edit.setMinimumWidth(120)
        top.addWidget(QLabel("System:"))
        top.addWidget(self.system_edit, 1)
        top.addWidget(QLabel("Preset:"))
        self.preset_combo = QComboBox()
        self.preset_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.preset_combo.setMinimumContentsLength(14)
        self.preset_combo.setToolTip("Prompts from the run's held-out data")
        top.addWidget(self.preset_combo, 1)
        self.random_button = QToolButton()
        self.random_button.setText("Random")
        self.random_button.setToolTip("A random held-out prompt")
        top.addWidget(self.random_button)
        column.addLayout(top)
        self.continue_box = QCheckBox("Continue conversation")
        self.continue_box.setToolTip("Off: a preset prompt starts a fresh comparison (every pane's conversation is "
                                     "cleared). On: it is asked as the next turn of the conversation.")
        bottom = QHBoxLayout()
        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setPlaceholderText("Ask all models the same thing… (Enter sends, Shift+Enter: new line)")
        self.prompt_edit.setFixedHeight(74)
        bottom.addWidget(self.prompt_edit, 1)
        buttons = QVBoxLayout()
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop every pane's answer")
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.continue_box)
        bottom.addLayout(buttons)
        column.addLayout(bottom)

    def set_presets(self, presets: list[Preset]) -> None:
        self.preset_combo.clear()
        self.preset_combo.addItem("(pick a held-out prompt)" if presets else "(no held-out prompts)")
        for preset in presets:
            self.preset_combo.addItem(preset.title, preset.prompt)
            self.preset_combo.setItemData(self.preset_combo.count() - 1,
                                          f"{preset.prompt}\n\nReference ({preset.origin}): {preset.reference}",
                                          Qt.ItemDataRole.ToolTipRole)


class SamplingBox(QGroupBox):
    """Greedy, temperature, top-p, max new tokens and seed, shared by all panes."""

    sampling_changed = Signal(object)  # Sampling

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Sampling (all panes)", parent)
        form = QFormLayout(self)
        form.setContentsMargins(8, 6, 8, 6)
        form.setVerticalSpacing(3)
        self.greedy = QCheckBox("greedy (no sampling)")
        self.temperature = QDoubleSpinBox(decimals=2, minimum=0.05, maximum=2.0, singleStep=0.05)
        self.top_p = QDoubleSpinBox(decimals=2, minimum=0.05, maximum=1.0, singleStep=0.05)
        self.max_new_tokens = QSpinBox(minimum=1, maximum=4096, singleStep=16)
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1)
        form.addRow(self.greedy)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-p", self.top_p)
        form.addRow("Max new tokens", self.max_new_tokens)
        form.addRow("Seed", self.seed)
        self.set_sampling(Sampling())
        for widget in (self.temperature, self.top_p, self.max_new_tokens, self.seed):
            widget.valueChanged.connect(self._on_value_changed)
        self.greedy.toggled.connect(self._on_value_changed)

    def set_sampling(self, sampling: Sampling) -> None:
        self.greedy.setChecked(sampling.greedy)
        self.temperature.setValue(sampling.temperature)
        self.top_p.setValue(sampling.top_p)
        self.max_new_tokens.setValue(sampling.max_new_tokens)
        self.seed.setValue(sampling.seed)
        self._sync_enabled()

    def sampling(self) -> Sampling:
        return Sampling(greedy=self.greedy.isChecked(), temperature=round(self.temperature.value(), 4),
                        top_p=round(self.top_p.value(), 4), max_new_tokens=self.max_new_tokens.value(),
                        seed=self.seed.value())

    def _sync_enabled(self) -> None:
        sampled = not self.greedy.isChecked()  # temperature and top-p mean nothing for greedy decoding
        self.temperature.setEnabled(sampled)
        self.top_p.setEnabled(sampled)

    def _on_value_changed(self, *_args: object) -> None:
        self._sync_enabled()
        self.sampling_changed.emit(self.sampling())


class VoteBar(QWidget):
    """'Which answer is best? [A] [B] [C] [Tie]' and the tally per model pair."""

    vote_cast = Signal(object)  # a letter, or None for a tie

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        self.prompt = QLabel("<b>Blind round</b> — which answer is best?")
        row.addWidget(self.prompt)
        self.buttons: dict[str, QPushButton] = {}
        for letter in LETTERS[:3]:
            button = QPushButton(letter)
            button.setFixedWidth(44)
            button.clicked.connect(lambda _checked=False, chosen=letter: self.vote_cast.emit(chosen))
            self.buttons[letter] = button
            row.addWidget(button)
        self.tie_button = QPushButton("Tie")
        self.tie_button.clicked.connect(lambda: self.vote_cast.emit(None))
        row.addWidget(self.tie_button)
        self.result = QLabel()
        self.result.setWordWrap(True)
        row.addWidget(self.result, 1)
        column.addLayout(row)
        # the tally has a line of its own and wraps: every pair readable at any window width
        self.tally_label = QLabel()
        self.tally_label.setStyleSheet("color: #57606a;")
        self.tally_label.setWordWrap(True)
        column.addWidget(self.tally_label)

    def set_state(self, letters: list[str], can_vote: bool, result: str = "") -> None:
        for letter, button in self.buttons.items():
            button.setVisible(letter in letters)
            button.setEnabled(can_vote)
        self.tie_button.setEnabled(can_vote)
        self.result.setText(result)

    def set_tally(self, tally: list[PairTally]) -> None:
        if not tally:
            self.tally_label.setText("No votes yet.")
            return
        # "; " between pairs: model names hold " · " themselves ("run · student_kd")
        self.tally_label.setText("Tally: " + ";   ".join(p.text() for p in tally))
        self.tally_label.setToolTip("\n".join(p.text() for p in tally))
