"""One training stage's optimisation settings as a form — learning rate (or a sweep), schedule, warm-up, epochs or
steps, batch size, gradient accumulation — used once for "every stage" and once per stage on the settings page.
Every tooltip is the spec field's help; :meth:`TrainForm.problem` is the spec's own sentence."""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QLineEdit, QSpinBox, QWidget

from engine.contract.spec import SpecError, TrainSpec, build
from engine.contract.spec_fields import default_of
from engine.contract.vocabulary import SCHEDULERS
from studio.pages.common import tip
from studio.model.wizard_model import DEFAULT_TRAIN, train_values


def spin(cls: type, name: str, low: int, high: int, value: int | None = None) -> QSpinBox:
    """A spin box for an integer setting, showing ``value`` or else the field's default in ``cls``."""
    box = tip(QSpinBox(), cls, name)
    box.setRange(low, high)  # wide: the spec, not the spin box, says what is impossible
    box.setValue(default_of(cls, name) if value is None else value)
    return box


def hint(text: str, wrap: bool = False) -> QLabel:
    label = QLabel(text)
    label.setObjectName("hint")
    label.setWordWrap(wrap)  # short hints stay on one line: a wrapping label in a form row reserves extra height
    return label


def _format_rate(value: float) -> str:
    return f"{value:g}"


class TrainForm(QWidget):
    """The settings of one training stage (or of all of them)."""

    edited = Signal()  # any field changed

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.learning_rate = tip(QLineEdit(), TrainSpec, "learning_rate")
        self.learning_rate.setToolTip(self.learning_rate.toolTip() + " Several values separated by commas run a "
                                      "sweep: " + TrainSpec.__dataclass_fields__["sweep_learning_rates"]
                                      .metadata["help"])
        self.scheduler = tip(QComboBox(), TrainSpec, "scheduler")
        self.scheduler.addItems(SCHEDULERS)
        self.warmup_ratio = tip(QDoubleSpinBox(), TrainSpec, "warmup_ratio")
        self.warmup_ratio.setRange(-1, 1)
        self.warmup_ratio.setSingleStep(0.01)
        self.epochs = tip(QDoubleSpinBox(), TrainSpec, "epochs")
        self.epochs.setRange(-1000, 1000)
        self.max_steps = spin(TrainSpec, "max_steps", 0, 10_000_000)
        self.max_steps.setSpecialValueText("use epochs")
        self.batch_size = spin(TrainSpec, "batch_size", -1, 4096)
        self.gradient_accumulation = spin(TrainSpec, "gradient_accumulation", -1, 1024)
        self.set_values(TrainSpec(**DEFAULT_TRAIN))  # the wizard's start: TrainSpec's defaults, its own max_steps
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Learning rate", self.learning_rate)
        form.addRow("", hint("e.g. 1e-4, or 5e-5, 1e-4, 2e-4 for a sweep"))
        form.addRow("Schedule", self.scheduler)
        form.addRow("Warm-up (fraction)", self.warmup_ratio)
        form.addRow("Epochs", self.epochs)
        form.addRow("Max steps", self.max_steps)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Gradient accumulation", self.gradient_accumulation)
        self.learning_rate.textChanged.connect(self.edited)
        self.scheduler.currentIndexChanged.connect(self.edited)
        for box in (self.warmup_ratio, self.epochs, self.max_steps, self.batch_size, self.gradient_accumulation):
            box.valueChanged.connect(self.edited)

    def fields(self) -> dict:
        """The form's settings, the learning-rate text still unparsed."""
        return {"scheduler": self.scheduler.currentText(), "warmup_ratio": round(self.warmup_ratio.value(), 4),
                "epochs": self.epochs.value(), "max_steps": self.max_steps.value(),
                "batch_size": self.batch_size.value(), "gradient_accumulation": self.gradient_accumulation.value()}

    def values(self, base: dict | None = None) -> dict:
        """``base`` (settings the form does not show) with the form's; SpecError for an unreadable rate."""
        return train_values({**(base or {}), **self.fields()}, self.learning_rate.text())

    def problem(self, base: dict | None = None) -> str:
        """The spec's sentence for what is wrong with these settings, '' when they are valid."""
        try:
            build(TrainSpec, self.values(base), "train")
        except SpecError as exc:
            return str(exc)
        return ""

    def set_values(self, train: TrainSpec) -> None:
        """Show a stage's train settings (from a spec, or copied from another form)."""
        rates = train.sweep_learning_rates or [train.learning_rate]
        text = ", ".join(_format_rate(r) for r in rates)
        if text != self.learning_rate.text():
            self.learning_rate.setText(text)
        self.scheduler.setCurrentText(train.scheduler)
        self.warmup_ratio.setValue(train.warmup_ratio)
        self.epochs.setValue(train.epochs)
        self.max_steps.setValue(train.max_steps)
        self.batch_size.setValue(train.batch_size)
        self.gradient_accumulation.setValue(train.gradient_accumulation)
