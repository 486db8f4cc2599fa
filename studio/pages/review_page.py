"""Wizard page 5: the spec as YAML, the equivalent terminal command, save, and launch (the Finish button)."""
from __future__ import annotations

import re
import time
from pathlib import Path

from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QPushButton, QWidget)

from engine.runs import data_dir
from engine.spec import RunSpec, SpecError, dump_spec
from studio.pages.common import StudioPage
from studio.wizard_model import build_spec, command_for


def specs_dir() -> Path:
    path = data_dir() / "specs"
    path.mkdir(parents=True, exist_ok=True)
    return path


class ReviewPage(StudioPage):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Review", "This is exactly what the engine will run. The same file runs from a terminal "
                         "with the command below.", parent)
        self.summary = QLabel("")
        self.summary.setObjectName("summary")
        self.summary.setWordWrap(True)
        self.yaml = QPlainTextEdit()
        self.yaml.setReadOnly(True)
        self.yaml.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
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
        self.body.addWidget(self.summary)
        self.body.addWidget(self.yaml, 1)
        self.body.addLayout(row)
        self.body.addWidget(self.error_label)
        self.spec: RunSpec | None = None
        self.spec_path: Path | None = None

    def initializePage(self) -> None:
        self.wizard().setButtonText(self.wizard().WizardButton.FinishButton, "Launch")
        try:
            self.spec = build_spec(self.choices)
        except SpecError as exc:
            self.spec = None
            self.yaml.setPlainText("")
            self.refuse(exc)
            self.completeChanged.emit()
            return
        self.accept_page()
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.spec.name).strip("-") or "run"
        self.spec_path = specs_dir() / f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
        text = dump_spec(self.spec, self.spec_path)
        self.yaml.setPlainText(text)
        self.command.setText(command_for(str(self.spec_path)))
        stages = " → ".join(f"{s.name} ({s.kind})" for s in self.spec.stages)
        self.summary.setText(f"<b>{self.spec.name}</b>: {stages}<br>teacher <code>{self.spec.teacher.source}"
                             f"</code>, student <code>{self.spec.student.source}</code>, data "
                             f"<code>{self.spec.data.preset}</code>, device <code>{self.spec.device}</code>")
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return self.spec is not None

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
