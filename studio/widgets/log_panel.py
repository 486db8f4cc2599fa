"""The Log tab: the engine's log events and stderr, with tqdm bars shown as one updating line each, library
warnings folded behind a "N library warnings" button, and — once the engine died — the tail of the run's
engine.log (the folding itself is Qt-free: studio/model/log_fold.py)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtGui import QFontDatabase, QTextCursor
from PySide6.QtWidgets import QHBoxLayout, QPlainTextEdit, QToolButton, QVBoxLayout, QWidget

from studio.model.log_fold import FoldedLine, LogFolder
from studio.model.run_state import RunState


def _fixed_font_view(max_lines: int) -> QPlainTextEdit:
    view = QPlainTextEdit()
    view.setReadOnly(True)
    view.setMaximumBlockCount(max_lines)
    view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
    view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
    return view


class LogView(QPlainTextEdit):
    """The engine's stderr and log events; bounded, appended in batches; progress bars update their own line."""

    warnings_changed = Signal(int)  # how many library warnings were folded away so far

    def __init__(self, parent: QWidget | None = None, max_lines: int = 5000) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(max_lines)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.seen = 0
        self.folder = LogFolder()
        self._last_bar: str | None = None  # the bar the last line shows, if it is a progress line

    def show_state(self, state: RunState) -> None:
        lines = state.new_log_lines(self.seen)
        self.seen = state.log_total
        if lines:
            self.add_lines(lines)

    def add_lines(self, lines: list[str]) -> None:
        folded_before = len(self.folder.warnings)
        shown = self.folder.fold(lines)
        if shown:
            self._show(shown)
        if len(self.folder.warnings) != folded_before:
            self.warnings_changed.emit(len(self.folder.warnings))

    def _show(self, shown: list[FoldedLine]) -> None:
        if shown[0].bar is not None and shown[0].bar == self._last_bar:
            # the bar already on screen moved on: rewrite its line in place rather than add one per update
            cursor = self.textCursor()
            cursor.movePosition(QTextCursor.MoveOperation.End)
            cursor.movePosition(QTextCursor.MoveOperation.StartOfBlock, QTextCursor.MoveMode.KeepAnchor)
            cursor.insertText(shown[0].text)
            shown = shown[1:]
        if shown:
            self.appendPlainText("\n".join(line.text for line in shown))  # one append per refresh, not per line
        self._last_bar = None if not shown else shown[-1].bar
        if not self.textCursor().hasSelection():
            # the cursor at the start of the last line, not its end: a log appended while its tab was
            # hidden would otherwise open scrolled to the right, every line cut at its start
            cursor = self.textCursor()
            cursor.movePosition(QTextCursor.MoveOperation.End)
            cursor.movePosition(QTextCursor.MoveOperation.StartOfBlock)
            self.setTextCursor(cursor)

    def reset(self) -> None:
        self.clear()
        self.horizontalScrollBar().setValue(0)
        self.seen = 0
        self.folder.reset()
        self._last_bar = None
        self.warnings_changed.emit(0)


class LogPanel(QWidget):
    """The log, a folded "N library warnings" entry that unfolds them, and the engine's last words."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = LogView()
        self.warnings_button = QToolButton()
        self.warnings_button.setCheckable(True)
        self.warnings_button.setAutoRaise(True)
        self.warnings_button.setToolTip("Warnings that libraries (transformers, torch, TRL …) printed; they do not "
                                        "stop the run. Click to show or hide them.")
        self.warnings_button.toggled.connect(self._on_toggled)
        self.warnings_button.hide()
        self.warnings_view = _fixed_font_view(2000)
        self.warnings_view.hide()
        self.view.warnings_changed.connect(self._on_warnings_changed)
        self.last_words_from: Path | None = None
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.warnings_button)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view, 3)
        layout.addLayout(row)
        layout.addWidget(self.warnings_view, 1)

    def show_state(self, state: RunState) -> None:
        self.view.show_state(state)

    def show_last_words(self, path: Path, lines: list[str]) -> None:
        """Append the end of the engine's stderr file (once per run and file)."""
        self.last_words_from = path
        if lines:
            self.view.add_lines([f"── the engine's last words: the end of {path} ──", *lines])

    def reset(self) -> None:
        self.view.reset()
        self.last_words_from = None

    def _on_warnings_changed(self, count: int) -> None:
        self.warnings_button.setVisible(count > 0)
        self._label(count)
        if count:
            self.warnings_view.setPlainText("\n".join(self.view.folder.warnings))
        else:
            self.warnings_view.clear()
            self.warnings_button.setChecked(False)

    def _label(self, count: int) -> None:
        arrow = "▾" if self.warnings_button.isChecked() else "▸"
        self.warnings_button.setText(f"{arrow} {count} library warning{'s' if count != 1 else ''}")

    def _on_toggled(self, shown: bool) -> None:
        self.warnings_view.setVisible(shown)
        self._label(len(self.view.folder.warnings))
