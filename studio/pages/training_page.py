"""Wizard page 4: optimisation settings of the training stages — the same for every stage (the shortcut, on by
default), or teacher SFT, student SFT, distillation and GRPO each with their own learning rate (or sweep),
schedule, epochs or steps and batch — plus what all stages share: max length, logging, the students' references,
LoRA and device. Every tooltip is the spec field's help; every refusal is the spec's own sentence, so the page and
``compression-engine run`` agree on what is impossible. Next is disabled while a value is impossible, and the
line under the fields says why."""
from __future__ import annotations

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QTabWidget, QWidget)

from engine.contract.spec import (DEVICES, PRECISIONS, DataSpec, LoraSpec, RunSpec, SFTStage, SpecError, TrainSpec,
                                  build, to_dict, updated)
from engine.contract.spec_fields import default_of
from studio.pages.common import StudioPage, tip
from studio.pages.train_form import TrainForm, hint, spin
from studio.model.wizard_model import GRPO_AFTER_COLD_START, TRAIN_STAGES, WizardChoices, stage_dicts


PRECISION_HINTS = {
    "auto": "fp32 weights, bf16 (or fp16) matmuls on a GPU; fp32 on the CPU",
    "bf16-mixed": "fp32 weights, bf16 matmuls", "fp16-mixed": "fp32 weights, fp16 matmuls with loss scaling (CUDA)",
    "bf16-pure": "warning: bf16 weights — at learning rates near 1e-5 most updates round away",
    "fp32": "no autocast: slowest, most exact"}


class SettingsPage(StudioPage):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Settings", "How the stages train. The next page shows the whole spec as YAML: edit "
                         "anything there (seeds, generation, a stage's own warm-up…) and the pages follow.", parent)
        self.same_for_all = QCheckBox("Same settings for every training stage")
        self.same_for_all.setChecked(True)
        self.same_for_all.setToolTip("Off: teacher SFT, student SFT, distillation and GRPO each get their own "
                                     "learning rate, schedule, steps and batch (the paper trains them differently).")
        self.shared = TrainForm()
        self.stage_tabs = QTabWidget()
        self.stage_forms: dict[str, TrainForm] = {}
        for name, label in TRAIN_STAGES.items():
            form = TrainForm()
            self.stage_forms[name] = form
            self.stage_tabs.addTab(form, label)
            form.edited.connect(self.recheck)
        self.stage_tabs.hide()
        self._stages_filled = False
        self.same_for_all.toggled.connect(self._on_same_for_all_toggled)
        self.shared.edited.connect(self.recheck)
        self.body.addWidget(self.same_for_all)
        self.body.addWidget(self.shared)
        self.body.addWidget(self.stage_tabs)
        self.body.addWidget(self._build_common_box())
        self.body.addWidget(self._build_lora_box())
        self.finish_layout()
        self.learning_rate = self.shared.learning_rate  # the shared form's fields, by their old names
        self.epochs, self.max_steps = self.shared.epochs, self.shared.max_steps
        self.batch_size, self.gradient_accumulation = self.shared.batch_size, self.shared.gradient_accumulation

    def _build_common_box(self) -> QGroupBox:
        box = QGroupBox("Every stage")
        self.max_length = spin(DataSpec, "max_length", 0, 131_072)
        self.logging_steps = spin(TrainSpec, "logging_steps", -1, 100_000)
        self.student_references = tip(QDoubleSpinBox(), SFTStage, "references")
        self.student_references.setRange(-1, 1)  # the spec says what is impossible
        self.student_references.setSingleStep(0.05)
        self.student_references.setValue(default_of(SFTStage, "references"))
        self.device = tip(QComboBox(), RunSpec, "device")
        self.device.addItems(DEVICES)
        self.precision = tip(QComboBox(), TrainSpec, "precision")
        self.precision.addItems(PRECISIONS)
        self.precision_hint = hint(PRECISION_HINTS["auto"])
        self.precision.currentTextChanged.connect(lambda p: self.precision_hint.setText(PRECISION_HINTS.get(p, "")))
        form = QFormLayout(box)
        form.addRow("Max length (tokens)", self.max_length)
        form.addRow("Log every (steps)", self.logging_steps)
        form.addRow("Student references", self.student_references)
        form.addRow("", hint("fraction of prompts whose answers the students see; KD: the teacher answers the rest"))
        form.addRow("Device", self.device)
        form.addRow("Precision", self.precision)
        form.addRow("", self.precision_hint)
        for widget in (self.max_length, self.logging_steps, self.student_references):
            widget.valueChanged.connect(self.recheck)
        return box

    def _build_lora_box(self) -> QGroupBox:
        self.lora = tip(QGroupBox("LoRA adapters"), LoraSpec, "enabled")
        self.lora.setCheckable(True)
        self.lora.setChecked(False)
        self.lora_r = spin(LoraSpec, "r", -1, 1024)
        self.lora_alpha = spin(LoraSpec, "alpha", -1, 4096)
        self.lora_dropout = tip(QDoubleSpinBox(), LoraSpec, "dropout")
        self.lora_dropout.setRange(-1, 1)
        self.lora_dropout.setSingleStep(0.05)
        self.lora_dropout.setValue(default_of(LoraSpec, "dropout"))
        self.qlora = tip(QCheckBox("on a 4-bit base (QLoRA)"), LoraSpec, "quantized_base")
        lora_form = QFormLayout(self.lora)
        lora_form.addRow("", self.qlora)
        lora_form.addRow("Rank r", self.lora_r)
        lora_form.addRow("Alpha", self.lora_alpha)
        lora_form.addRow("Dropout", self.lora_dropout)
        for widget in (self.lora_r, self.lora_alpha, self.lora_dropout):
            widget.valueChanged.connect(self.recheck)
        self.lora.toggled.connect(self.recheck)
        return self.lora

    _initialised = False

    def initializePage(self) -> None:
        device = getattr(self.wizard(), "default_device", "")
        if device and not self._initialised:
            self.device.setCurrentText(device)
        self._initialised = True
        self._show_stage_tabs()
        self.recheck()

    def _stages_in_run(self) -> list[str]:
        try:
            names = [s["name"] for s in stage_dicts(self.choices)]
        except SpecError:
            names = list(TRAIN_STAGES)
        return [n for n in TRAIN_STAGES if n in names]

    def _show_stage_tabs(self) -> None:
        """Only the stages the chosen method runs have a tab."""
        present = self._stages_in_run() if self.wizard() is not None else list(TRAIN_STAGES)
        for index, name in enumerate(TRAIN_STAGES):
            self.stage_tabs.setTabVisible(index, name in present)

    def _on_same_for_all_toggled(self, same: bool) -> None:
        if not same and not self._stages_filled:  # start every stage from the shared settings
            try:
                shared = build(TrainSpec, self.shared.values(), "train")
            except SpecError:
                shared = None
            for name, form in self.stage_forms.items():
                if shared is not None:
                    form.set_values(self._stage_start(name, shared))
            self._stages_filled = True
        self.shared.setVisible(same)
        self.stage_tabs.setVisible(not same)
        self.recheck()

    def _stage_start(self, name: str, shared: TrainSpec) -> TrainSpec:
        """A stage's form when per-stage settings are switched on: the shared settings, except GRPO after a cold
        start, which starts at the rate the wizard gives it (the shared one wrecked the cold start on the demo)."""
        if name == "grpo" and self.wizard() is not None and self.choices.cold_start:
            return updated(shared, GRPO_AFTER_COLD_START, "train")
        return shared

    # ------------------------------------------------------------------ values
    def shared_train(self) -> dict:
        """Settings every stage shares, whether or not the forms are per stage."""
        lora = {"enabled": self.lora.isChecked(), "r": self.lora_r.value(), "alpha": self.lora_alpha.value(),
                "dropout": round(self.lora_dropout.value(), 4),
                "quantized_base": self.lora.isChecked() and self.qlora.isChecked()}
        return {"logging_steps": self.logging_steps.value(), "lora": lora, "precision": self.precision.currentText()}

    def stage_trains(self, base: dict[str, TrainSpec]) -> dict[str, TrainSpec]:
        """Stage name → its train settings (per-stage forms) over ``base``'s; SpecError for a stage the run
        trains. A stage it does not train (its tab hidden) keeps its settings in ``base`` if its form's are
        impossible."""
        in_run, trains = self._stages_in_run(), {}
        for name, form in self.stage_forms.items():
            old = base.get(name)
            values = form.values({**(to_dict(old) if old is not None else {}), **self.shared_train()})
            try:
                trains[name] = build(TrainSpec, values, f"{name}.train")
            except SpecError:
                if name in in_run:
                    raise
                if old is not None:
                    trains[name] = old
        return trains

    def problem(self) -> str:
        if self.wizard() is None:
            return ""
        shared = self.shared_train()
        if self.same_for_all.isChecked():
            problem = self.shared.problem({**to_dict(self.choices.train), **shared})
            if problem:
                return problem
        for name in self._stages_in_run() if not self.same_for_all.isChecked() else ():
            own = self.choices.stage_train.get(name)
            problem = self.stage_forms[name].problem({**(to_dict(own) if own is not None else {}), **shared})
            if problem:
                return f"{TRAIN_STAGES[name]}: {problem}"
        try:
            updated(self.choices.data, {"max_length": self.max_length.value()}, "data")
            build(SFTStage, {"name": "student", "references": round(self.student_references.value(), 4)}, "stage")
        except SpecError as exc:
            return str(exc)
        return ""

    def validatePage(self) -> bool:
        c = self.choices
        try:
            if self.same_for_all.isChecked():
                train = build(TrainSpec, self.shared.values({**to_dict(c.train), **self.shared_train()}), "train")
                stage_train = c.stage_train
            else:
                train, stage_train = c.train, self.stage_trains(c.stage_train)
            data = updated(c.data, {"max_length": self.max_length.value()}, "data")
            references = round(self.student_references.value(), 4)
            build(SFTStage, {"name": "student", "references": references}, "stage")
        except SpecError as exc:
            return self.refuse(exc)
        c.train, c.stage_train, c.same_train = train, stage_train, self.same_for_all.isChecked()
        c.data, c.student_references, c.device = data, references, self.device.currentText()
        return self.accept_page()

    def show_choices(self, c: WizardChoices) -> None:
        """Fill the page from choices (an edited YAML, an opened spec)."""
        self.shared.set_values(c.train)
        for name, form in self.stage_forms.items():
            form.set_values(c.stage_train.get(name, c.train))
        self._stages_filled = True
        self.same_for_all.setChecked(c.same_train)
        self.max_length.setValue(c.data.max_length)
        self.logging_steps.setValue(c.train.logging_steps)
        lora = c.train.lora
        self.lora.setChecked(bool(lora.enabled))
        self.lora_r.setValue(lora.r)
        self.lora_alpha.setValue(lora.alpha)
        self.lora_dropout.setValue(lora.dropout)
        self.qlora.setChecked(bool(lora.quantized_base))
        self.precision.setCurrentText(c.train.precision)
        self.student_references.setValue(c.student_references)
        self.device.setCurrentText(c.device)
        self._initialised = True
