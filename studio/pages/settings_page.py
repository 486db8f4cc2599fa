"""Wizard page 4: optimisation settings shared by the training stages — learning rate (or a sweep), epochs or
steps, batch size, max length, LoRA and device. Every tooltip is the spec field's help; every refusal is the
spec's own sentence, so the page and ``compression-engine run`` agree on what is impossible."""
from __future__ import annotations

from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QLabel, QLineEdit,
                               QSpinBox, QWidget)

from engine.spec import DEVICES, DataSpec, LoraSpec, RunSpec, SpecError, StageSpec, TrainSpec, build
from studio.pages.common import StudioPage, tip
from studio.wizard_model import train_values


def _spin(cls: type, name: str, low: int, high: int, value: int) -> QSpinBox:
    box = tip(QSpinBox(), cls, name)
    box.setRange(low, high)
    box.setValue(value)
    return box


class SettingsPage(StudioPage):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Settings", "Applied to every training stage; fine-tune single stages in the YAML on the "
                         "next page or in a saved spec file.", parent)
        self.learning_rate = tip(QLineEdit("1e-3"), TrainSpec, "learning_rate")
        self.learning_rate.setToolTip(self.learning_rate.toolTip() + " Several values separated by commas run a "
                                      "sweep: " + TrainSpec.__dataclass_fields__["sweep_learning_rates"]
                                      .metadata["help"])
        self.registerField("learning_rate*", self.learning_rate)
        self.epochs = tip(QDoubleSpinBox(), TrainSpec, "epochs")
        self.epochs.setRange(-1000, 1000)  # the spec says what is impossible
        self.epochs.setValue(1.0)
        self.max_steps = _spin(TrainSpec, "max_steps", 0, 10_000_000, 200)
        self.max_steps.setSpecialValueText("use epochs")
        self.batch_size = _spin(TrainSpec, "batch_size", -1, 4096, 8)
        self.gradient_accumulation = _spin(TrainSpec, "gradient_accumulation", -1, 1024, 1)
        self.max_length = _spin(DataSpec, "max_length", 0, 131_072, 512)
        self.logging_steps = _spin(TrainSpec, "logging_steps", -1, 100_000, 5)
        self.student_references = tip(QDoubleSpinBox(), StageSpec, "references")
        self.student_references.setRange(-1, 1)  # the spec says what is impossible
        self.student_references.setSingleStep(0.05)
        self.student_references.setValue(1.0)
        self.device = tip(QComboBox(), RunSpec, "device")
        self.device.addItems(DEVICES)
        form = QFormLayout()
        form.addRow("Learning rate", self.learning_rate)
        form.addRow("", self._hint("e.g. 1e-4, or 5e-5, 1e-4, 2e-4 for a sweep"))
        form.addRow("Epochs", self.epochs)
        form.addRow("Max steps", self.max_steps)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Gradient accumulation", self.gradient_accumulation)
        form.addRow("Max length (tokens)", self.max_length)
        form.addRow("Log every (steps)", self.logging_steps)
        form.addRow("Student references", self.student_references)
        form.addRow("", self._hint("fraction of prompts whose answers the students see; KD: the teacher answers "
                                   "the rest"))
        form.addRow("Device", self.device)
        self.body.addLayout(form)
        self.lora = tip(QGroupBox("LoRA adapters"), LoraSpec, "enabled")
        self.lora.setCheckable(True)
        self.lora.setChecked(False)
        self.lora_r = _spin(LoraSpec, "r", -1, 1024, 16)
        self.lora_alpha = _spin(LoraSpec, "alpha", -1, 4096, 32)
        self.lora_dropout = tip(QDoubleSpinBox(), LoraSpec, "dropout")
        self.lora_dropout.setRange(-1, 1)
        self.lora_dropout.setSingleStep(0.05)
        self.lora_dropout.setValue(0.05)
        lora_form = QFormLayout(self.lora)
        lora_form.addRow("Rank r", self.lora_r)
        lora_form.addRow("Alpha", self.lora_alpha)
        lora_form.addRow("Dropout", self.lora_dropout)
        self.body.addWidget(self.lora)
        self.finish_layout()

    @staticmethod
    def _hint(text: str) -> QLabel:
        label = QLabel(text)
        label.setObjectName("hint")
        return label

    def initializePage(self) -> None:
        device = getattr(self.wizard(), "default_device", "")
        if device and not self._initialised:
            self.device.setCurrentText(device)
        self._initialised = True

    _initialised = False

    def train_dict(self) -> dict:
        lora = {"enabled": self.lora.isChecked(), "r": self.lora_r.value(), "alpha": self.lora_alpha.value(),
                "dropout": round(self.lora_dropout.value(), 4)}
        return {"epochs": self.epochs.value(), "max_steps": self.max_steps.value(),
                "batch_size": self.batch_size.value(), "gradient_accumulation": self.gradient_accumulation.value(),
                "logging_steps": self.logging_steps.value(), "lora": lora}

    def validatePage(self) -> bool:
        try:
            train = train_values(self.train_dict(), self.learning_rate.text())
            build(TrainSpec, train, "train")
            data = {**self.choices.data, "max_length": self.max_length.value()}
            build(DataSpec, data, "data")
            references = round(self.student_references.value(), 4)
            build(StageSpec, {"kind": "sft", "name": "student", "references": references}, "stage")
        except SpecError as exc:
            return self.refuse(exc)
        self.choices.train = train
        self.choices.data = data
        self.choices.student_references = references
        self.choices.device = self.device.currentText()
        return self.accept_page()
