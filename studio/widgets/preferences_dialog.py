"""The settings dialog (data directory, default device, engine Python) and the About box with versions."""
from __future__ import annotations

import importlib.metadata
import platform
import sys

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QMessageBox, QPushButton, QWidget)

from engine.contract.runs import data_dir
from engine.contract.spec import DEVICES, RunSpec, field_help
from studio import __version__
from studio.model.app_settings import StudioSettings

LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets", "PySide6-Essentials",
             "pyqtgraph", "numpy", "platformdirs")


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions, read from package metadata — never by importing (that would load torch)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def about_text(settings: StudioSettings) -> str:
    rows = "".join(f"<tr><td>{k}</td><td>&nbsp;&nbsp;{v}</td></tr>" for k, v in library_versions().items())
    return (f"<h3>Compression Studio {__version__}</h3>"
            "<p>Distil a large language model into a small one, sharpen it with chain-of-thought GRPO, quantize "
            "it to 4 bits, and measure how much skill survived (after Paredes La Torre, Flores and Rodriguez, "
            "arXiv 2603.13765).</p>"
            f"<p>Python {platform.python_version()} · engine Python <code>{settings.engine_python}</code><br>"
            f"Data directory <code>{data_dir()}</code></p><table>{rows}</table>")


class SettingsDialog(QDialog):
    def __init__(self, settings: StudioSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumWidth(600)  # whole paths: at its natural width the engine's Python read "vork/venv/bin/python"
        self.settings = settings
        self.data_dir = QLineEdit(settings.data_dir)
        self.data_dir.setPlaceholderText(str(data_dir()))
        self.data_dir.setToolTip("Where runs, models and the demo kit are stored (empty: the platform default). "
                                 "Takes effect at the next start.")
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setCurrentText(settings.device)
        self.device.setToolTip(field_help(RunSpec, "device"))
        self.engine_python = QLineEdit(settings.engine_python)
        self.engine_python.setToolTip("The Python of the environment that has the engine (torch, transformers…); "
                                      f"the studio runs `<python> -m engine`. Default: {sys.executable}")
        form = QFormLayout(self)
        form.addRow("Data directory", self._with_browse(self.data_dir, directory=True))
        form.addRow("Default device", self.device)
        form.addRow("Engine Python", self._with_browse(self.engine_python, directory=False))
        note = QLabel("The engine runs as a separate process, so the studio stays responsive and survives any "
                      "crash of a training run.")
        note.setObjectName("hint")
        note.setWordWrap(True)
        form.addRow(note)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _with_browse(self, edit: QLineEdit, directory: bool) -> QHBoxLayout:
        button = QPushButton("Browse…")

        def browse() -> None:
            path = (QFileDialog.getExistingDirectory(self, "Data directory") if directory
                    else QFileDialog.getOpenFileName(self, "Engine Python")[0])
            if path:
                edit.setText(path)

        button.clicked.connect(browse)
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        row.addWidget(button)
        return row

    def values(self) -> StudioSettings:
        return StudioSettings(data_dir=self.data_dir.text().strip(), device=self.device.currentText(),
                              engine_python=self.engine_python.text().strip() or sys.executable,
                              first_run_done=self.settings.first_run_done, smoothing=self.settings.smoothing)


def show_about(parent: QWidget, settings: StudioSettings) -> None:
    QMessageBox.about(parent, "About Compression Studio", about_text(settings))
