"""History's "Export GGUF…": pick one of a run's saved models, the GGUF formats and a folder; the engine's
``export`` command (``python -m engine export RUN_ID:STAGE …``) writes the files and streams its progress here.

The dialog only presents; the work and its checks (architecture, formats, all-or-nothing writing) are the
engine's (engine/export/gguf.py), run in its own process like every other engine job, so the studio stays free
of torch and transformers.
"""
from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLayout, QLineEdit, QProgressBar, QPushButton, QVBoxLayout,
                               QWidget)

from engine.contract.runs import RunRecord
from engine.contract.safe_json import load_json_file
from engine.contract.stage_specs import ExportSpec
from engine.contract.vocabulary import GGUF_FORMAT_NOTES
from studio.engine_client import EngineClient, EngineLauncher

log = logging.getLogger(__name__)
FORMATS = {fmt: f"{fmt} ({note})" for fmt, note in GGUF_FORMAT_NOTES.items()}  # format → its check box's label
DEFAULT_FORMATS = tuple(ExportSpec().formats)  # what a spec's export stage writes unless told otherwise


def exportable_models(record: RunRecord) -> list[tuple[str, Path]]:
    """(stage, folder) of each full-precision model the run saved, in stage order when the spec is readable."""
    models = Path(record.path) / "models"
    found = []
    for folder in sorted(models.iterdir()) if models.is_dir() else []:
        try:
            config = load_json_file(folder / "config.json")
        except (OSError, ValueError):
            continue  # not a model folder (a GGUF export, a partial save)
        if not isinstance(config, dict):
            continue
        if not config.get("quantization_config"):  # a 4-bit model: GGUF is made from full precision
            found.append((folder.name, folder))
    return found


def format_report(status: str, summary: dict, folder: str, asked: list[str]) -> str:
    """One line per format asked for: written (file, size), or not written and why. The engine writes the
    formats it can when one cannot be made (llama.cpp's quantizer absent for q4_k_m) and names those in the done
    summary's ``skipped`` (format → its sentence, with the install command)."""
    files, sizes = summary.get("files") or {}, summary.get("bytes") or {}
    skipped = summary.get("skipped") or {}
    if not files and not skipped:
        return f"Export {status}."
    lines = [f"Written to {folder}:" if files else f"Nothing written to {folder}:"]
    for fmt in asked or list(files):
        if fmt in files:
            lines.append(f"✓ {fmt}: {Path(files[fmt]).name} ({sizes.get(fmt, 0) / 1e6:.1f} MB)")
        else:
            lines.append(f"✗ {fmt} not written: {skipped.get(fmt) or 'the engine did not say why'}")
    return "\n".join(lines)


class ExportDialog(QDialog):
    """One export of one run's model; the Export button starts it, Close cancels a running one."""

    def __init__(self, record: RunRecord, launcher: EngineLauncher | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Export GGUF — {record.name}")
        self.record = record
        self.launcher = launcher or EngineLauncher()
        self.client: EngineClient | None = None
        self._asked: list[str] = []  # the formats of the export running or last run
        self.model_combo = QComboBox()
        for stage, folder in exportable_models(record):
            self.model_combo.addItem(stage, str(folder))
        self.format_boxes = {fmt: QCheckBox(text) for fmt, text in FORMATS.items()}
        for fmt in DEFAULT_FORMATS:
            self.format_boxes[fmt].setChecked(True)
        self.modelfile_box = QCheckBox("Write an Ollama Modelfile (ollama create NAME -f Modelfile)")
        self.modelfile_box.setChecked(True)
        # off by default: the engine refuses to replace a file already in the folder unless asked to
        self.overwrite_box = QCheckBox("Replace files of the same names already in the folder")
        self.overwrite_box.setToolTip("Without this, an export that would overwrite a .gguf file or Modelfile "
                                      "already there is refused before any work, and the file is left alone.")
        self.out_edit = QLineEdit(str(Path(record.path) / "gguf"))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._on_browse_clicked)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.status_label = QLabel("Files for llama.cpp, Ollama and LM Studio.")
        self.status_label.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.ActionRole)
        self.export_button.clicked.connect(self._on_export_clicked)
        self.export_button.setEnabled(self.model_combo.count() > 0)
        self.buttons.rejected.connect(self.reject)
        if not self.model_combo.count():
            self._say("This run saved no full-precision model to export.")
        form = QFormLayout()
        form.addRow("Model", self.model_combo)
        formats = QVBoxLayout()
        for box in self.format_boxes.values():
            formats.addWidget(box)
        form.addRow("Formats", formats)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit)
        out_row.addWidget(browse)
        form.addRow("Folder", out_row)
        form.addRow("", self.modelfile_box)
        form.addRow("", self.overwrite_box)
        layout = QVBoxLayout(self)
        # the dialog grows with its report: a long failure sentence had squeezed the format boxes to 10 px
        layout.setSizeConstraint(QLayout.SizeConstraint.SetMinimumSize)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)  # the commands
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addWidget(self.buttons)

    def _say(self, text: str) -> None:
        """Show a status or report; the label keeps the height its wrapped lines need (a top-level layout does
        not reserve it by itself), so the dialog grows instead of squeezing the format boxes."""
        self.status_label.setText(text)
        self.status_label.setMinimumHeight(self.status_label.heightForWidth(max(self.status_label.width(), 200)))

    def arguments(self) -> list[str]:
        """The engine command line for the current choices."""
        formats = [fmt for fmt, box in self.format_boxes.items() if box.isChecked()]
        args = ["export", f"{self.record.id}:{self.model_combo.currentText()}", "--format", ",".join(formats),
                "--out", self.out_edit.text().strip(), "--name", f"{self.record.name}-{self.model_combo.currentText()}"]
        return args + ([] if self.modelfile_box.isChecked() else ["--no-modelfile"]) + \
            (["--overwrite"] if self.overwrite_box.isChecked() else [])

    def _on_browse_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export into", self.out_edit.text())
        if folder:
            self.out_edit.setText(folder)

    def _on_export_clicked(self) -> None:
        if not any(box.isChecked() for box in self.format_boxes.values()):
            self._say("Choose at least one format.")
            return
        self.export_button.setEnabled(False)
        self._asked = [fmt for fmt, box in self.format_boxes.items() if box.isChecked()]
        self.progress.setRange(0, 0)  # busy until the first progress event
        self._say("Exporting…")
        self.client = EngineClient(self.launcher, self)
        self.client.progress_received.connect(self._on_client_progress)
        self.client.run_finished.connect(self._on_client_finished)
        self.client.run_failed.connect(self._on_client_failed)
        self.client.start(*self.arguments())

    def _on_client_progress(self, data: dict) -> None:
        self.progress.setRange(0, int(data.get("total") or 1))
        self.progress.setValue(int(data.get("step") or 0))
        eta = data.get("eta_s")
        self._say(f"Exporting… {data.get('step')}/{data.get('total')} tensors"
                                  + (f", about {eta:.0f} s left" if eta is not None else ""))

    def _on_client_finished(self, status: str, summary: dict) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if status == "finished" else 0)
        self._say(format_report(status, summary, self.out_edit.text(), self._asked))
        self.export_button.setEnabled(True)

    def _on_client_failed(self, message: str, _log_tail: str) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self._say(f"Export failed: {message}")
        self.export_button.setEnabled(True)

    def reject(self) -> None:  # Close during an export cancels it (the engine removes its partial files)
        if self.client is not None and self.client.running:
            self.client.cancel()
        super().reject()
