"""Wizard page 2: the task data — a preset, any hub data set (id, config, split), or a local file with a column
mapping and a preview of its first rows, in instruction/response, Alpaca or chat (ShareGPT, messages) form. A
file with problems is refused here, at its offending line, not minutes into a run."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from engine.contract.data.presets import PRESETS
from engine.contract.data.preview import Preview, preview_file
from engine.contract.data.records import MAPPABLE_FIELDS
from engine.contract.spec import (
    DATA_FORMATS,
    DATA_PRESETS,
    DataSpec,
    SpecError,
    updated,
)
from studio.model.wizard_model import DATA_FORMAT_LABELS, DATA_PRESET_LABELS
from studio.keyboard import EnterCommits
from studio.pages.common import StudioPage, tip

NONE = "(none)"
ALIASES = {"instruction": ("instruction", "prompt", "question", "input_text", "query"),
           "response": ("response", "output", "completion", "answer_text", "target"),
           "context": ("context", "input"), "category": ("category", "task", "type"),
           "answer": ("answer", "final_answer"), "tests": ("tests", "test_cases")}


def guess_mapping(columns: list[str]) -> dict[str, str]:
    """Canonical name → file column, for columns whose names say what they are."""
    lower = {c.lower(): c for c in columns}
    mapping = {}
    for canonical, names in ALIASES.items():
        for name in names:
            if name in lower and lower[name] not in mapping.values():
                mapping[canonical] = lower[name]
                break
    return mapping


def conversation_text(messages: list[dict]) -> str:
    """A chat record in one cell: 'role: text' per turn."""
    return "\n".join(f"{t['role']}: {t['content']}" for t in messages)


class DataPage(StudioPage):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Data", "What the models learn from. Presets download from the hub (or use a local "
                         "copy); a local file needs its columns mapped.", parent)
        self.preset = tip(QComboBox(), DataSpec, "preset")
        for key in DATA_PRESETS:
            self.preset.addItem(DATA_PRESET_LABELS.get(key, key), key)
        self.preset.currentIndexChanged.connect(self._on_preset_changed)
        self.path = tip(QLineEdit(), DataSpec, "path")
        self.path.setPlaceholderText("path of a .jsonl, .json, .csv or .parquet file")
        self.path.editingFinished.connect(self._on_path_edited)
        EnterCommits(self.path, self._on_path_edited)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._on_browse_clicked)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path, 1)
        path_row.addWidget(browse)
        self.hub_id = tip(QLineEdit(), DataSpec, "hub_id")
        self.hub_id.setPlaceholderText("e.g. HuggingFaceH4/no_robots or tatsu-lab/alpaca")
        self.hub_config = tip(QLineEdit(), DataSpec, "hub_config")
        self.hub_config.setPlaceholderText("(default)")
        self.split = tip(QLineEdit("train"), DataSpec, "split")
        self.format = tip(QComboBox(), DataSpec, "format")
        for key in DATA_FORMATS:
            self.format.addItem(DATA_FORMAT_LABELS.get(key, key), key)
        self.format.currentIndexChanged.connect(lambda *_: self.refresh_preview())
        self.max_samples = tip(QSpinBox(), DataSpec, "max_samples")
        self.max_samples.setRange(0, 10_000_000)
        self.max_samples.setSpecialValueText("all")
        self.validation_fraction = tip(QDoubleSpinBox(), DataSpec, "validation_fraction")
        self.test_fraction = tip(QDoubleSpinBox(), DataSpec, "test_fraction")
        for box, value in ((self.validation_fraction, 0.05), (self.test_fraction, 0.1)):
            box.setRange(0.0, 1.0)  # the spec, not the spin box, decides what is too much
            box.setDecimals(3)
            box.setSingleStep(0.01)
            box.setValue(value)
        form = QFormLayout()
        form.addRow("Data set", self.preset)
        self.hub_row = QWidget()
        hub_form = QFormLayout(self.hub_row)
        hub_form.setContentsMargins(0, 0, 0, 0)
        hub_form.addRow("Hub id", self.hub_id)
        hub_form.addRow("Config / split", self._pair("config", self.hub_config, "split", self.split))
        form.addRow(self.hub_row)
        form.addRow("File", path_row)
        form.addRow("Format", self.format)
        form.addRow("Records", self.max_samples)
        form.addRow("Held out", self._pair("validation", self.validation_fraction, "test", self.test_fraction))
        self.body.addLayout(form)
        self.body.addWidget(self._build_mapping_box())
        self.preview_status = QLabel("")
        self.preview_status.setObjectName("hint")
        self.preview_status.setWordWrap(True)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.setMinimumHeight(180)
        self.body.addWidget(self.preview_status)
        self.body.addWidget(self.table, 1)
        self.finish_layout()
        self.last_preview: Preview | None = None
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(250)
        self._debounce.timeout.connect(self.refresh_preview)
        self._on_preset_changed()

    def _build_mapping_box(self) -> QGroupBox:
        self.mapping_box = QGroupBox("Column mapping (canonical name → column in the file)")
        grid = QGridLayout(self.mapping_box)
        self.mapping: dict[str, QComboBox] = {}
        for i, name in enumerate(MAPPABLE_FIELDS):
            required = name in ("instruction", "response")
            combo = QComboBox()
            combo.addItem(NONE)
            combo.currentIndexChanged.connect(self._on_mapping_changed)
            combo.setToolTip(f"The file's column holding the {name}" + (" (required)" if required else " (optional)"))
            self.mapping[name] = combo
            grid.addWidget(QLabel(name + ("*" if required else "")), i // 3, 2 * (i % 3))
            grid.addWidget(combo, i // 3, 2 * (i % 3) + 1)
        return self.mapping_box

    @staticmethod
    def _pair(a_label: str, a: QWidget, b_label: str, b: QWidget) -> QHBoxLayout:
        row = QHBoxLayout()
        for label, widget in ((a_label, a), (b_label, b)):
            row.addWidget(QLabel(label))
            row.addWidget(widget)
        row.addStretch(1)
        return row

    def preset_key(self) -> str:
        return self.preset.currentData()

    def set_preset(self, key: str) -> None:
        self.preset.setCurrentIndex(self.preset.findData(key))

    def _on_preset_changed(self, *_: object) -> None:
        local, hub = self.preset_key() == "local", self.preset_key() == "hub"
        self.mapping_box.setVisible(local)
        self.table.setVisible(local)
        self.hub_row.setVisible(hub)
        self.format.setEnabled(local or hub)
        if local:  # what the file holds, at once: not only after the path is edited again (or Next, then Back)
            self._show_local_file()
            return
        self.preview_status.setText("The engine reads this data set from the hub when the run starts (or the file "
                                    "above, a local copy of it); a missing column is named then." if hub else
                                    "This preset is read by the engine when the run starts.")

    def _show_local_file(self) -> None:
        if self.path.text().strip():
            if self.mapping["instruction"].count() == 1:  # columns not read yet
                self._on_path_edited()
            else:
                self.refresh_preview()
        else:
            self.table.setRowCount(0)
            self._set_status("Choose a file (Browse… or type its path): its first rows and the column mapping "
                             "show here.", "hint")

    def _set_status(self, text: str, name: str) -> None:
        self.preview_status.setText(text)
        self.preview_status.setObjectName(name)
        self.preview_status.style().unpolish(self.preview_status)
        self.preview_status.style().polish(self.preview_status)

    def _on_browse_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Data file", "", "Data (*.jsonl *.json *.csv *.parquet)")
        if path:
            self.set_path(path)

    def set_path(self, path: str) -> None:
        self.path.setText(path)
        self._on_path_edited()

    def _on_path_edited(self) -> None:
        key = self.preset_key()
        if self.path.text().strip() and key not in ("local", "hub") and not PRESETS[key].hub_id:
            # A demo preset has no hub data a file could be a local copy of: a file typed or browsed here is the
            # user's own data, so show its rows and mapping instead of silently running on the demo's.
            self.set_preset("local")  # its handler reads the file's columns and previews them
            return
        self._fill_columns([])  # a new file: its columns decide the mapping
        self.refresh_preview()

    def _on_mapping_changed(self, *_: object) -> None:
        if not getattr(self, "_filling", False):
            self._debounce.start()

    def columns(self) -> dict[str, str]:
        return {k: c.currentText() for k, c in self.mapping.items() if c.currentText() != NONE}

    def set_column(self, canonical: str, column: str) -> None:
        self.mapping[canonical].setCurrentText(column)

    def _fill_columns(self, columns: list[str]) -> None:
        self._filling = True
        guessed = guess_mapping(columns)
        for name, combo in self.mapping.items():
            combo.clear()
            combo.addItem(NONE)
            combo.addItems(columns)
            combo.setCurrentText(guessed.get(name, NONE))
        self._filling = False

    def refresh_preview(self) -> Preview | None:
        """Read the first rows through the mapping; show them, or the first problems with their lines."""
        path = self.path.text().strip()
        if self.preset_key() != "local" or not path:
            self.last_preview = None
            return None
        fmt = self.format.currentData()
        preview = preview_file(path, self.columns() or None, limit=20, fmt=fmt)
        if preview.columns and self.mapping["instruction"].count() == 1:
            self._fill_columns(preview.columns)
            preview = preview_file(path, self.columns() or None, limit=20, fmt=fmt)
        self.last_preview = preview
        chats = bool(preview.rows) and all(r.get("messages") for r in preview.rows)
        self.mapping_box.setVisible(not chats)  # a chat file's turns say who speaks: nothing to map
        self._show_rows(preview)
        if preview.errors:
            self._set_status("Problems in this file:\n" + "\n".join(preview.errors[:5]), "pageError")
        else:
            self._set_status(f"{len(preview.rows)} rows previewed of {preview.total_rows_read} read; "
                             f"{Path(path).name} looks fine.", "hint")
        return preview

    def _show_rows(self, preview: Preview) -> None:
        keys = [k for k in ("messages", "instruction", "context", "response", "category", "answer") if
                any(r.get(k) for r in preview.rows)] or ["instruction", "response"]
        self.table.setColumnCount(len(keys))
        self.table.setHorizontalHeaderLabels(["conversation" if k == "messages" else k for k in keys])
        self.table.setRowCount(len(preview.rows))
        for row, record in enumerate(preview.rows):
            for col, key in enumerate(keys):
                text = conversation_text(record[key]) if key == "messages" and record.get(key) \
                    else str(record.get(key) or "")
                item = QTableWidgetItem(text[:200].replace("\n", " ⏎ "))
                item.setToolTip(text[:2000])
                self.table.setItem(row, col, item)
        for col in range(len(keys)):
            self.table.setColumnWidth(col, 240)

    def values(self) -> dict:
        hub = {"hub_id": self.hub_id.text().strip(), "hub_config": self.hub_config.text().strip(),
               "split": self.split.text().strip()} if self.preset_key() == "hub" else {}
        fmt = {"format": self.format.currentData()} if self.format.currentData() != "auto" else {}
        return {"preset": self.preset_key(), "path": self.path.text().strip(), "columns": self.columns(), **hub, **fmt,
                "max_samples": self.max_samples.value(), "validation_fraction": self.validation_fraction.value(),
                "test_fraction": self.test_fraction.value()}

    def show_choices(self, c) -> None:
        """Fill the page from choices (an edited YAML, an opened spec)."""
        data: DataSpec = c.data
        self.set_preset(data.preset)
        self.max_samples.setValue(data.max_samples)
        self.validation_fraction.setValue(data.validation_fraction)
        self.test_fraction.setValue(data.test_fraction)
        if data.path != self.path.text():
            self.set_path(data.path)
        for name, column in data.columns.items():
            if name in self.mapping:
                combo = self.mapping[name]
                if combo.findText(column) < 0:
                    combo.addItem(column)
                combo.setCurrentText(column)

    def validatePage(self) -> bool:
        try:
            data = updated(self.choices.data, self.values(), "data")  # keeps what the page does not show (seed…)
        except SpecError as exc:
            return self.refuse(exc)
        if data.preset == "local":
            preview = self.refresh_preview()
            if preview is not None and preview.errors:
                return self.refuse(f"the data file has problems; first: {preview.errors[0]}")
            if preview is not None and not preview.rows:
                return self.refuse("no usable rows in this file; check the column mapping.")
        self.choices.data = data
        return self.accept_page()
