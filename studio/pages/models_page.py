"""Wizard page 1: the run's name, the teacher and the student (hub id, local folder, GGUF file or demo kit), with
what ``engine inspect`` can tell about them without loading weights."""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from PySide6.QtCore import Qt

from engine.contract.model_info import KDPairing, ModelInfo, kd_compatibility, kd_pairing, missing_local_source
from engine.contract.spec import DTYPES, ModelSpec, RunSpec, SpecError, build, updated
from studio.arena.catalog import ModelChoice
from studio.pages.common import StudioPage, tip

SUGGESTIONS = {"teacher": ("demo:teacher", "Qwen/Qwen2.5-3B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"),
               "student": ("demo:student", "Qwen/Qwen2.5-0.5B-Instruct")}


class ModelBox(QGroupBox):
    """Source, dtype and 4-bit loading of one model, plus its inspected description."""

    def __init__(self, role: str, parent: QWidget | None = None) -> None:
        super().__init__(role.capitalize(), parent)
        self.role = role
        self._run_models: dict[str, str] = {}  # label → folder of each run's saved model on offer
        self.source = QComboBox()
        self.source.setEditable(True)
        self.source.addItems(SUGGESTIONS[role])
        self.source.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.source.setMinimumContentsLength(16)  # long hub ids or paths scroll; they do not widen the window
        tip(self.source, ModelSpec, "source")
        folder = QPushButton("Folder…")
        folder.clicked.connect(self._on_folder_clicked)
        gguf = QPushButton("GGUF…")
        gguf.clicked.connect(self._on_gguf_clicked)
        row = QHBoxLayout()
        row.addWidget(self.source, 1)
        row.addWidget(folder)
        row.addWidget(gguf)
        self.dtype = tip(QComboBox(), ModelSpec, "dtype")
        self.dtype.addItems(DTYPES)
        self.load_in_4bit = tip(QCheckBox("Load in 4 bits (NF4)"), ModelSpec, "load_in_4bit")
        self.info = QLabel("Not inspected yet.")
        self.info.setObjectName("hint")
        self.info.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("Source", row)
        form.addRow("Weights", self._pair(self.dtype, self.load_in_4bit))
        form.addRow("", self.info)

    @staticmethod
    def _pair(a: QWidget, b: QWidget) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(a)
        row.addWidget(b)
        row.addStretch(1)
        return row

    def _on_folder_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self, f"{self.role.capitalize()} model folder")
        if path:
            self.source.setEditText(path)

    def _on_gguf_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"{self.role.capitalize()} GGUF file", "", "GGUF (*.gguf)")
        if path:
            self.source.setEditText(path)

    def show_info(self, text: str, problem: bool = False) -> None:
        """What was read of the model (grey), or why it could not be read (red)."""
        self.info.setText(text)
        name = "hintProblem" if problem else "hint"
        if self.info.objectName() != name:
            self.info.setObjectName(name)
            self.info.style().unpolish(self.info)
            self.info.style().polish(self.info)

    def set_run_models(self, models: list[ModelChoice]) -> None:
        """Offer the runs' saved models after the suggestions, each named ``<run name> · <stage>`` (the list
        follows the run folders; what the box shows stays as it is)."""
        text = self.source.currentText()
        self._run_models = {m.label: m.source for m in models}
        self.source.blockSignals(True)
        self.source.clear()
        self.source.addItems(SUGGESTIONS[self.role])
        for model in models:
            self.source.addItem(model.label, model.source)
            self.source.setItemData(self.source.count() - 1, model.source, Qt.ItemDataRole.ToolTipRole)
        self.source.setCurrentIndex(self.source.findText(text))
        self.source.setEditText(text)
        self.source.blockSignals(False)

    def values(self) -> dict:
        """The source as the spec names it: a run's model shown by its label is its folder."""
        text = self.source.currentText().strip()
        return {"source": self._run_models.get(text, text), "dtype": self.dtype.currentText(),
                "load_in_4bit": self.load_in_4bit.isChecked()}

    def set_values(self, model: ModelSpec) -> None:
        self.source.setEditText(model.source)
        self.dtype.setCurrentText(model.dtype)
        self.load_in_4bit.setChecked(bool(model.load_in_4bit))


class ModelsPage(StudioPage):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Models", "The large model that teaches and the small model that learns. Hub ids need "
                         "the network; the demo kit works offline.", parent)
        self.name = tip(QLineEdit("my-run"), RunSpec, "name")
        # no registerField("name*"): QWizard counts a mandatory field as empty while it holds its initial
        # value, so the untouched default disabled Next; problem() decides instead, and says why
        self.name.textChanged.connect(self.recheck)
        self.teacher = ModelBox("teacher")
        self.student = ModelBox("student")
        self.inspect_button = QPushButton("Read model info")
        self.inspect_button.setToolTip("Read each model's configuration (no weights are loaded).")
        self.inspect_button.clicked.connect(self._on_inspect_clicked)
        self.compat = QLabel("")
        self.compat.setObjectName("hint")
        self.compat.setWordWrap(True)
        self._info: dict[str, dict] = {}
        self._connected = False
        self.run_models: Callable[[], list[ModelChoice]] | None = None  # the runs' saved models, newest first
        top = QFormLayout()
        top.addRow("Run name", self.name)
        self.body.addLayout(top)
        self.body.addWidget(self.teacher)
        self.body.addWidget(self.student)
        row = QHBoxLayout()
        row.addWidget(self.inspect_button)
        row.addWidget(self.compat, 1)
        self.body.addLayout(row)
        self.finish_layout()
        for role, box in self._boxes().items():
            box.source.editTextChanged.connect(self.recheck)
            box.source.editTextChanged.connect(lambda _text, role=role: self._on_source_edited(role))
            # a model picked from the list (a suggestion or a run's model) is read at once, as the demo is;
            # typed text waits for "Read model info" (half a path is not worth an engine process)
            box.source.activated.connect(lambda _index, role=role: self._on_source_picked(role))

    def refresh_run_models(self) -> None:
        """Re-read the runs' saved models into both source lists (``run_models`` is set by the main window)."""
        models = self.run_models() if self.run_models is not None else []
        for box in self._boxes().values():
            box.set_run_models(models)

    def showEvent(self, event) -> None:  # Qt's name
        self.refresh_run_models()  # runs may have finished since the page was last on screen
        super().showEvent(event)

    def initializePage(self) -> None:
        if self._connected:
            return  # initializePage runs again after Back; connect once
        self._connected = True
        inspector = self.wizard().inspector
        inspector.inspected.connect(self._on_inspector_inspected)
        inspector.inspect_failed.connect(self._on_inspector_failed)

    def _on_source_edited(self, role: str) -> None:
        """What was read of the previous source says nothing about the new one."""
        box = self._boxes()[role]
        if box.info.text() != "Not inspected yet.":
            box.show_info("Not inspected yet.")
        if self._info.pop(role, None) is not None:
            self.compat.setText("")

    def _on_source_picked(self, role: str) -> None:
        box = self._boxes()[role]
        source = box.values()["source"]
        if source and self.wizard() is not None:
            box.show_info("Reading the configuration…")
            self.wizard().inspector.inspect(source)

    def _boxes(self):
        return {"teacher": self.teacher, "student": self.student}

    def _on_inspect_clicked(self) -> None:
        for box in self._boxes().values():
            source = box.values()["source"]
            if source:
                box.show_info("Reading the configuration…")
                self.wizard().inspector.inspect(source)

    def _on_inspector_inspected(self, source: str, info: ModelInfo) -> None:
        for role, box in self._boxes().items():
            if box.values()["source"] == source:
                box.show_info(info.describe())
                self._info[role] = info
        self.compat.setText(kd_compatibility(self._info.get("teacher"), self._info.get("student")))

    def pairing(self) -> KDPairing:
        """What the inspected teacher/student pair allows for distillation (unknown until both are read)."""
        return kd_pairing(self._info.get("teacher"), self._info.get("student"))

    def _on_inspector_failed(self, source: str, message: str) -> None:
        for box in self._boxes().values():
            if box.values()["source"] == source:
                box.show_info(f"Could not read it: {message}", problem=True)  # red, not the grey of a hint

    def problem(self) -> str:
        if not self.name.text().strip():
            return "name: is empty; give the run a short name (it names the run in the history)."
        try:
            for role, box in self._boxes().items():
                build(ModelSpec, box.values(), role)
        except SpecError as exc:
            return str(exc)
        for role, box in self._boxes().items():
            missing = missing_local_source(box.values()["source"])
            if missing:
                return f"{role}.source: {missing}"
        return ""

    def validatePage(self) -> bool:
        problem = self.problem()
        if problem:
            return self.refuse(problem)
        c = self.choices
        try:  # updated: keeps what the page does not show (revision)
            teacher, student = (updated(getattr(c, role), box.values(), role) for role, box in self._boxes().items())
        except SpecError as exc:
            return self.refuse(exc)
        c.name, c.teacher, c.student = self.name.text().strip(), teacher, student
        return self.accept_page()

    def show_choices(self, c) -> None:
        self.name.setText(c.name)
        self.teacher.set_values(c.teacher)
        self.student.set_values(c.student)
