"""Wizard page 5: the spec as YAML — editable: a valid edit flows back into the other pages, a refusal shows the
spec's own sentence with the line it concerns — the equivalent terminal command, save, and launch (Finish)."""
from __future__ import annotations

import re
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QColor, QFontDatabase, QGuiApplication, QTextCursor, QTextFormat
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QPushButton,
                               QTextEdit, QWidget)

from engine.contract.runs import data_dir
from engine.contract.spec import RunSpec, SpecError, build, dump_spec, parse_spec_text
from studio.pages.common import StudioPage
from studio.pages.spec_lines import line_of_error
from studio.model.memory_summary import memory_summary
from studio.model.wizard_model import build_spec, command_for


def specs_dir() -> Path:
    path = data_dir() / "specs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def parse_yaml_spec(text: str) -> RunSpec:
    """The spec in ``text`` through the engine's own loader; SpecError starts with 'line N:' where known."""
    try:
        return build(RunSpec, parse_spec_text(text), "spec")
    except SpecError as exc:
        message = str(exc)
        if not message.startswith("line "):
            line = line_of_error(text, message)
            message = f"line {line}: {message}" if line else message
        raise SpecError(message) from None


class ReviewPage(StudioPage):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Review", "This is exactly what the engine will run; edit the YAML to change anything "
                         "(the other pages follow). The same file runs from a terminal with the command below.",
                         parent)
        self.summary = QLabel("")
        self.summary.setObjectName("summary")
        self.summary.setWordWrap(True)
        self.yaml = QPlainTextEdit()
        self.yaml.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.yaml.setTabChangesFocus(True)  # Tab leaves the editor: YAML is indented with spaces
        self.yaml.setMinimumHeight(160)
        self.command = QLineEdit()
        self.command.setReadOnly(True)
        self.command.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        copy = QPushButton("Copy command")
        copy.clicked.connect(self._on_copy_clicked)
        save = QPushButton("Save spec as…")
        save.clicked.connect(self._on_save_clicked)
        row = QHBoxLayout()
        row.addWidget(self.command, 1)
        row.addWidget(copy)
        row.addWidget(save)
        self.memory = QLabel("")
        self.memory.setObjectName("memory")
        self.memory.setWordWrap(True)
        self.memory_report: dict | None = None
        self.notes = QLabel("")  # what reading an opened spec ignored (an older version's default blocks)
        self.notes.setObjectName("notes")
        self.notes.setWordWrap(True)
        self.notes.hide()
        self.body.addWidget(self.summary)
        self.body.addWidget(self.notes)
        self.body.addWidget(self.memory)
        self.body.addWidget(self.yaml, 1)
        self.body.addLayout(row)
        self.spec: RunSpec | None = None
        self.spec_path: Path | None = None
        self.problem_text = ""
        self._shown_text = ""  # the YAML as the page wrote it (edits differ from it)
        self._reparse = QTimer(self)
        self._reparse.setSingleShot(True)
        self._reparse.setInterval(400)
        self._reparse.timeout.connect(self.apply_yaml)
        self.yaml.textChanged.connect(self._on_yaml_text_changed)
        # the error line keeps its place, shown or not, three lines high: appearing under the editor while the
        # person types, it shrank the editor and moved the text under the cursor
        policy = self.error_label.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.error_label.setSizePolicy(policy)
        self.error_label.setFixedHeight(self.error_label.fontMetrics().lineSpacing() * 3 + 16)

    def _show_error(self, text: str) -> None:
        super()._show_error(text)
        self.error_label.setToolTip(text)  # all of it, where three lines do not hold it

    def initializePage(self) -> None:
        self.wizard().setButtonText(self.wizard().WizardButton.FinishButton, "Launch")
        try:
            spec = self.wizard().loaded_spec or build_spec(self.choices)
        except SpecError as exc:
            self._set_spec(None, str(exc))
            self._set_text("")
            return
        self.show_spec(spec)

    def show_spec(self, spec: RunSpec) -> None:
        """Show a valid spec: its YAML, the command and a one-line summary."""
        self.spec_path = self._spec_path_for(spec.name)
        self._set_text(dump_spec(spec, self.spec_path))
        self.command.setText(command_for(str(self.spec_path)))
        self._set_spec(spec, "")

    def show_notes(self, notes: list[str]) -> None:
        """Sentences about the opened file (settings it holds that its stages do not use), or none."""
        self.notes.setText("\n".join(notes))
        self.notes.setVisible(bool(notes))

    def _spec_path_for(self, name: str) -> Path:
        """The file the command names: one per wizard session and run name. Each visit of the page used to
        write a new time-stamped file into specs/; now a visit rewrites this session's file, and a renamed run
        moves it (a launched run keeps its own copy, runs/<id>/spec.yaml)."""
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
        old = self.spec_path
        if old is not None and re.fullmatch(re.escape(slug) + r"-\d{8}-\d{6}", old.stem):
            return old
        if old is not None:
            old.unlink(missing_ok=True)  # this page's own file for the old name
        return specs_dir() / f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}.yaml"

    def _set_text(self, text: str) -> None:
        self._shown_text = text
        self.yaml.blockSignals(True)
        self.yaml.setPlainText(text)
        self.yaml.blockSignals(False)
        self.yaml.setExtraSelections([])

    def _set_spec(self, spec: RunSpec | None, problem: str) -> None:
        self.spec, self.problem_text = spec, problem
        if spec is not None:
            stages = " → ".join(f"{s.name} ({s.kind})" for s in spec.stages)
            self.summary.setText(f"<b>{spec.name}</b>: {stages}<br>teacher <code>{spec.teacher.source}</code>, "
                                 f"student <code>{spec.student.source}</code>, data <code>{spec.data.preset}"
                                 f"</code>, device <code>{spec.device}</code>")
            self._check_memory()
        else:  # a blank line read as a lost estimate: say why there is none
            self.memory_report = None
            self.memory.setText("<b>Memory</b>: unknown — the spec above has an error")
        self.recheck()

    def problem(self) -> str:
        return self.problem_text

    # ------------------------------------------------------------------ memory
    def _check_memory(self) -> None:
        """Ask the engine for the plan's memory estimate (a background process; the studio never loads torch)."""
        preflight = getattr(self.wizard(), "preflight", None) if self.wizard() else None
        if preflight is None or self.spec_path is None or not self.spec_path.exists():
            return
        self.memory.setText("<b>Memory</b>: estimating…")
        preflight.check(str(self.spec_path))

    def show_memory(self, report: dict) -> None:
        if self.spec is None:
            return  # the estimate of the text before an invalid edit: it no longer describes the page
        self.memory_report = report
        self.memory.setText(memory_summary(report))

    def show_memory_problem(self, message: str) -> None:
        if self.spec is None:
            return
        self.memory_report = None
        self.memory.setText(f"<b>Memory</b>: no estimate ({message})")

    # ------------------------------------------------------------------ editing
    def _on_yaml_text_changed(self) -> None:
        self._reparse.start()  # parse once the typing pauses; Launch parses at once

    def apply_yaml(self) -> bool:
        """Read the edited YAML with the spec's own loader: valid → it is the spec, and the other pages show it;
        invalid → the spec's sentence at its line, Launch disabled. The cursor and focus stay where they are."""
        self._reparse.stop()
        text = self.yaml.toPlainText()
        try:
            spec = parse_yaml_spec(text)
        except SpecError as exc:
            self._mark_line(str(exc))
            self._set_spec(None, str(exc))
            return False
        self.yaml.setExtraSelections([])
        if text != self._shown_text:
            self.wizard().take_spec(spec)  # the pages follow the edit
            path = self._spec_path_for(spec.name)  # a name typed here moves the file
            if path != self.spec_path:
                self.spec_path = path
                self.command.setText(command_for(str(self.spec_path)))
            self.spec_path.write_text(text, encoding="utf-8")  # the command names the file as edited
        self._set_spec(spec, "")
        return True

    def _mark_line(self, message: str) -> None:
        match = re.match(r"line (\d+):", message)
        if not match:
            self.yaml.setExtraSelections([])
            return
        block = self.yaml.document().findBlockByLineNumber(int(match.group(1)) - 1)
        selection = QTextEdit.ExtraSelection()
        selection.format.setBackground(QColor("#fdecec"))
        selection.format.setProperty(QTextFormat.Property.FullWidthSelection, True)
        selection.cursor = QTextCursor(block)
        self.yaml.setExtraSelections([selection])

    def validatePage(self) -> bool:
        return self.apply_yaml() if self._reparse.isActive() or self.spec is None else True

    def save_spec(self, path: str | Path) -> Path:
        """Write the spec (YAML, or JSON for a .json path) where the user asked."""
        if self.spec is None:
            raise SpecError("there is no valid spec to save.")
        dump_spec(self.spec, path)
        return Path(path)

    def _on_copy_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.command.text())

    def _on_save_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save run spec", str(Path.home() / "spec.yaml"),
                                              "YAML (*.yaml *.yml);;JSON (*.json)")
        if path:
            self.save_spec(path)
