"""Wizard page 3: what to do — SFT, one of the four distillation methods, GRPO, 4-bit quantization, or the whole
pipeline — with each method's own knobs (divergence, α, temperature; rewards and their weights; 4-bit format).
The distillation methods offered are those the teacher/student pair allows (same vocabulary or not), with the
reason shown above the knobs."""
from __future__ import annotations

from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.contract.spec import (
    DIVERGENCES,
    QUANT_TYPES,
    REWARDS,
    DistillSpec,
    GRPOSpec,
    QuantizeSpec,
    RewardSpec,
    SpecError,
    TrainSpec,
    build,
    field_help,
    updated,
)
from engine.contract.data.presets import PRESETS
from engine.contract.stage_specs import KD_METHOD_KNOBS
from studio.model.wizard_model import (COLD_START_STEPS, COLD_START_TRAIN, GRPO_AFTER_COLD_START, KD_METHOD,
                                       METHODS, WIZARD_GRPO_BETA, distill_settings, method_blocks,
                                       parse_learning_rates)
from studio.pages.common import StudioPage, tip

# The spec's defaults are the page's defaults: one home for each knob.
DISTILL, GRPO, QUANTIZE = DistillSpec(), GRPOSpec(), QuantizeSpec()
DEFAULT_REWARDS = {r.name: r.weight for r in GRPO.rewards}
GRPO_COLD_START_NOTE = (
    "GRPO reinforces answers the student already sometimes gets right: one that never saw the "
    "<think>…</think><answer>…</answer> template earns reward 0 on every completion and learns nothing. Start it "
    "from a model fine-tuned on chain-of-thought examples in that template (a cold start): on the demo kit, 40 "
    "GRPO steps left a student without one at 0 % correct; with one it started at 34 %.")
COLD_START_LABEL = "Add a cold start: SFT on the template first"
COLD_START_TIP = ("An SFT stage (format cot_template) before GRPO: the data's reasoning traces written as "
                  "<think>reasoning</think> <answer>answer</answer> after exactly GRPO's prompt, so the student "
                  "writes the template and GRPO has rewards to reinforce. Needs data with reasoning traces (the "
                  "demo's reasoning set, Codeforces CoT). Uses the training settings with its own steps and "
                  "learning rate (defaults measured to learn the template on the demo kit); GRPO after it learns at "
                  f"{GRPO_AFTER_COLD_START['learning_rate']:g} unless the Training page gives GRPO its own settings.")
GRPO_DATA_HINT = (f" “{PRESETS['demo'].title}” is not made for GRPO (no reasoning traces, no tests): pick "
                  f"“{PRESETS['demo_reasoning'].title}” on the Data page, its word problems, arithmetic and small "
                  "programs come with answers, reasoning traces and tests.")


class MethodPage(StudioPage):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Method", "How the student is made. The whole pipeline reproduces the paper: teacher "
                         "SFT, an SFT baseline, distillation, chain-of-thought GRPO, 4-bit quantization.", parent)
        self.group = QButtonGroup(self)
        methods = QVBoxLayout()
        self.buttons: dict[str, QRadioButton] = {}
        for key, label in METHODS.items():
            button = QRadioButton(label)
            self.buttons[key] = button
            self.group.addButton(button)
            methods.addWidget(button)
        self.buttons["token_kd"].setChecked(True)
        self.group.buttonToggled.connect(self._on_method_toggled)
        self.body.addLayout(methods)
        self.pairing = QLabel("")  # what the teacher/student pair allows, and why (engine.contract.model_info)
        self.pairing.setObjectName("hint")
        self.pairing.setWordWrap(True)
        self.body.addWidget(self.pairing)
        # two columns, the 4-bit box under distillation: three boxes side by side were wider than a 1024-pixel
        # window's page, and the scroll area (no horizontal bar) cut the 4-bit box off
        left = QVBoxLayout()
        left.addWidget(self._build_kd_box())
        left.addWidget(self._build_quant_box())
        left.addStretch(1)
        row = QHBoxLayout()
        row.addLayout(left)
        row.addWidget(self._build_grpo_box(), 1)
        self.body.addLayout(row)
        self.with_eval = QCheckBox("Evaluate at the end (ROUGE-L, exact match, retention vs the teacher)")
        self.with_eval.setChecked(True)
        self.body.addWidget(self.with_eval)
        self.finish_layout()
        self._on_method_toggled()

    def _build_kd_box(self) -> QGroupBox:
        self.kd_box = QGroupBox("Distillation")
        self.divergence = tip(QComboBox(), DistillSpec, "divergence")
        self.divergence.addItems(DIVERGENCES)
        self.alpha = tip(QDoubleSpinBox(), DistillSpec, "alpha")
        self.alpha.setRange(-10, 10)  # the spec refuses what is outside [0, 1], with its own words
        self.alpha.setSingleStep(0.1)
        self.alpha.setValue(DISTILL.alpha)
        self.temperature = tip(QDoubleSpinBox(), DistillSpec, "temperature")
        self.temperature.setRange(-10, 100)
        self.temperature.setSingleStep(0.5)
        self.temperature.setValue(DISTILL.temperature)
        self.with_teacher_sft = QCheckBox("Fine-tune the teacher first")
        self.with_teacher_sft.setChecked(True)
        self.with_baseline = QCheckBox("Also train an SFT student baseline")
        self.with_baseline.setChecked(True)
        form = self.kd_form = QFormLayout(self.kd_box)
        form.addRow("Divergence", self.divergence)
        form.addRow("α (CE weight)", self.alpha)
        form.addRow("Temperature", self.temperature)
        form.addRow(self.with_teacher_sft)
        form.addRow(self.with_baseline)
        return self.kd_box

    def _build_grpo_box(self) -> QGroupBox:
        self.grpo_box = QGroupBox("GRPO rewards")
        grid = QGridLayout(self.grpo_box)
        self.reward_checks: dict[str, QCheckBox] = {}
        self.reward_weights: dict[str, QDoubleSpinBox] = {}
        for i, name in enumerate(REWARDS):
            check = QCheckBox(name)
            check.setChecked(name in DEFAULT_REWARDS)
            weight = tip(QDoubleSpinBox(), RewardSpec, "weight")
            weight.setRange(-10, 10)
            weight.setSingleStep(0.1)
            weight.setValue(DEFAULT_REWARDS.get(name, 0.5))
            self.reward_checks[name], self.reward_weights[name] = check, weight
            grid.addWidget(check, i, 0)
            grid.addWidget(weight, i, 1)
        self.num_generations = tip(QSpinBox(), GRPOSpec, "num_generations")
        self.num_generations.setRange(0, 64)
        self.num_generations.setValue(GRPO.num_generations)
        grid.addWidget(tip(QLabel("Group size"), GRPOSpec, "num_generations"), len(REWARDS), 0)
        grid.addWidget(self.num_generations, len(REWARDS), 1)
        self.beta = tip(QDoubleSpinBox(), GRPOSpec, "beta")
        self.beta.setDecimals(3)
        self.beta.setRange(0, 10)
        self.beta.setSingleStep(0.01)
        self.beta.setValue(WIZARD_GRPO_BETA)
        grid.addWidget(tip(QLabel("KL β"), GRPOSpec, "beta"), len(REWARDS) + 1, 0)
        grid.addWidget(self.beta, len(REWARDS) + 1, 1)
        self.grpo_note = QLabel(GRPO_COLD_START_NOTE)
        self.grpo_note.setObjectName("hint")
        self.grpo_note.setWordWrap(True)
        grid.addWidget(self.grpo_note, len(REWARDS) + 2, 0, 1, 2)
        self.cold_start = QCheckBox(COLD_START_LABEL)
        self.cold_start.setToolTip(COLD_START_TIP)
        self.cold_start_steps = QSpinBox()
        self.cold_start_steps.setRange(0, 10 ** 6)
        self.cold_start_steps.setSpecialValueText("its epochs")  # 0: the train settings' epochs decide
        self.cold_start_steps.setSuffix(" steps")
        self.cold_start_steps.setValue(COLD_START_STEPS)
        self.cold_start_steps.setToolTip(f"{field_help(TrainSpec, 'max_steps')} {COLD_START_TIP}")
        self.cold_start_lr = QLineEdit(f"{COLD_START_TRAIN['learning_rate']:g}")
        self.cold_start_lr.setToolTip(f"{field_help(TrainSpec, 'learning_rate')} The cold start's own; "
                                      f"{COLD_START_TRAIN['learning_rate']:g} learned the template on the demo "
                                      "where the shared 1e-3 did not.")
        self.cold_start_lr_label = QLabel("Cold-start learning rate")
        self.cold_start_lr_label.setToolTip(self.cold_start_lr.toolTip())
        self.cold_start.toggled.connect(self._on_cold_start_toggled)
        grid.addWidget(self.cold_start, len(REWARDS) + 3, 0)
        grid.addWidget(self.cold_start_steps, len(REWARDS) + 3, 1)
        grid.addWidget(self.cold_start_lr_label, len(REWARDS) + 4, 0)
        grid.addWidget(self.cold_start_lr, len(REWARDS) + 4, 1)
        return self.grpo_box

    def _build_quant_box(self) -> QGroupBox:
        self.quant_box = QGroupBox("4-bit quantization")
        self.quant_type = tip(QComboBox(), QuantizeSpec, "quant_type")
        self.quant_type.addItems(QUANT_TYPES)
        self.double_quant = tip(QCheckBox("Double quantization"), QuantizeSpec, "double_quant")
        self.double_quant.setChecked(QUANTIZE.double_quant)
        form = QFormLayout(self.quant_box)
        form.addRow("Format", self.quant_type)
        form.addRow(self.double_quant)
        return self.quant_box

    def initializePage(self) -> None:  # Qt's name
        """Offer the distillation methods the pair allows, with the reason (read on the models page)."""
        models_page = getattr(self.wizard(), "models_page", None)
        if models_page is not None:
            self.show_pairing(models_page.pairing())
        self.show_grpo_start(self.choices.student.source if self.wizard() is not None else "")

    def show_grpo_start(self, student: str) -> None:
        """The cold-start note, as a warning when GRPO would start from a student known never to have seen the
        think/answer template (the demo's, a run's SFT/KD student, or the pipeline's own KD student): its rewards
        would all be 0."""
        untaught = student == "demo:student" or student.rstrip("/").endswith(("/student_kd", "/student_sft"))
        grpo_from_untaught = self.method() == "pipeline" or (untaught and self.method() == "grpo")
        warn = grpo_from_untaught and not self.cold_start.isChecked()
        self.cold_start_steps.setEnabled(self.cold_start.isChecked())
        self.cold_start_lr.setEnabled(self.cold_start.isChecked())
        if warn:
            extra = (" This run's GRPO starts from such a student (the demo's or a distilled one), so it will not "
                     f"learn: tick “{COLD_START_LABEL}” below.")
        elif self.cold_start.isChecked():
            extra = " This run has a cold start: an SFT stage teaches the template before GRPO."
        else:
            extra = ""
        if self.wizard() is not None and self.choices.data.preset == "demo" and "grpo" in method_blocks(self.method()):
            extra += GRPO_DATA_HINT  # the instructions kit's rewards would all be 0 whatever the start
        self.grpo_note.setText(GRPO_COLD_START_NOTE + extra)
        self.grpo_note.setObjectName("hintProblem" if warn else "hint")
        self.grpo_note.style().unpolish(self.grpo_note)
        self.grpo_note.style().polish(self.grpo_note)

    def _on_cold_start_toggled(self, *_: object) -> None:
        self.show_grpo_start(self.choices.student.source if self.wizard() is not None else "")

    def show_pairing(self, pairing) -> None:
        self.pairing.setText(pairing.reason)
        for key, kd in KD_METHOD.items():
            self.buttons[key].setEnabled(kd in pairing.methods)
        self.buttons["pipeline"].setEnabled("token" in pairing.methods)  # its KD stage is token-level
        if not self.buttons[self.method()].isEnabled():
            self.set_method(next(k for k, kd in KD_METHOD.items() if kd == pairing.methods[0]))

    def method(self) -> str:
        return next(k for k, b in self.buttons.items() if b.isChecked())

    def set_method(self, key: str) -> None:
        self.buttons[key].setChecked(True)

    def _kd_method(self) -> str:
        return KD_METHOD.get(self.method(), "token")  # the whole pipeline distils token by token

    def _on_method_toggled(self, *_: object) -> None:
        m = self.method()
        blocks = method_blocks(m)  # which stage kinds the method runs, per the contract's table
        label = METHODS[m].split(" — ")[0]
        for box, title, kind, by in ((self.kd_box, "Distillation", "distill",
                                      "the distillation methods and the whole pipeline"),
                                     (self.grpo_box, "GRPO rewards", "grpo", "GRPO and the whole pipeline"),
                                     (self.quant_box, "4-bit quantization", "quantize",
                                      "4-bit quantization and the whole pipeline")):
            # greyed out and saying why: a knob that looks live but does nothing misleads
            used = kind in blocks
            box.setEnabled(used)
            box.setTitle(title if used else f"{title} (not used)")
            box.setToolTip("" if used else f"Not used by “{label}”: these settings apply to {by}.")
        self._show_kd_knobs("distill" in blocks)
        if self.wizard() is not None:
            self.show_grpo_start(self.choices.student.source)
        self.with_eval.setEnabled(m != "quantize")
        self.with_eval.setToolTip("" if m != "quantize" else "4-bit quantization alone ends with its own size and "
                                  "memory report (the 4-bit pane); the evaluation runs with the other methods.")

    def _show_kd_knobs(self, used: bool) -> None:
        """Only the knobs the KD method reads (the contract's KD_METHOD_KNOBS) are shown, e.g. cross-tokenizer KD
        has no divergence row; in an unused box every widget is off, each on its own too, so none reads as live."""
        knobs = KD_METHOD_KNOBS[self._kd_method()]
        for name, widget in (("divergence", self.divergence), ("alpha", self.alpha),
                             ("temperature", self.temperature)):
            widget.setEnabled(used and name in knobs)
            self.kd_form.setRowVisible(widget, name in knobs)
        for check in (self.with_teacher_sft, self.with_baseline):
            check.setEnabled(used)

    def values(self) -> tuple[dict, dict, dict]:
        """The boxes' settings; of the distillation knobs only those the chosen KD method reads."""
        knobs = KD_METHOD_KNOBS[self._kd_method()]
        distill = {k: v for k, v in (("divergence", self.divergence.currentText()),
                                     ("alpha", round(self.alpha.value(), 4)),
                                     ("temperature", round(self.temperature.value(), 4))) if k in knobs}
        rewards = [{"name": n, "weight": round(self.reward_weights[n].value(), 4)}
                   for n, check in self.reward_checks.items() if check.isChecked()]
        grpo = {"rewards": rewards, "num_generations": self.num_generations.value(),
                "beta": round(self.beta.value(), 4)}
        quantize = {"quant_type": self.quant_type.currentText(), "double_quant": self.double_quant.isChecked()}
        return distill, grpo, quantize

    def validatePage(self) -> bool:
        c = self.choices
        built = {}  # updated: settings of an opened spec that the page does not show are kept
        for key, values, box in zip(("distill", "grpo", "quantize"), self.values(),
                                    (self.kd_box, self.grpo_box, self.quant_box)):
            try:
                if key == "distill":  # the method follows the page; knobs it ignores fall back to defaults
                    built[key] = build(DistillSpec, distill_settings(c.distill, self._kd_method(), values), key)
                else:
                    built[key] = updated(getattr(c, key), values, key)
            except SpecError as exc:
                if box.isEnabled():
                    return self.refuse(exc)
                built[key] = getattr(c, key)  # a box the method does not use may hold anything; it is not run
        try:
            cold_lr = self.cold_start_learning_rate()
        except SpecError as exc:
            return self.refuse(exc)
        c.method = self.method()
        c.distill, c.grpo, c.quantize = built["distill"], built["grpo"], built["quantize"]
        c.with_teacher_sft = self.with_teacher_sft.isChecked()
        c.with_baseline = self.with_baseline.isChecked()
        c.with_eval = self.with_eval.isChecked()
        c.cold_start, c.cold_start_steps = self.cold_start.isChecked(), self.cold_start_steps.value()
        c.cold_start_lr = cold_lr
        return self.accept_page()

    def cold_start_learning_rate(self) -> float:
        """The cold-start learning-rate box's value (the page's one rate, not a sweep); SpecError names it."""
        try:
            rates = parse_learning_rates(self.cold_start_lr.text())
        except SpecError as exc:  # its words name train.learning_rate: say which one
            raise SpecError(f"cold_start.{exc}") from None
        if len(rates) != 1:
            raise SpecError("cold_start.train.learning_rate: give one learning rate (such as 3e-3), not a sweep.")
        return build(TrainSpec, {"learning_rate": rates[0]}, "cold_start.train").learning_rate

    def show_choices(self, c) -> None:
        """Fill the page from choices (an edited YAML, an opened spec)."""
        self.set_method(c.method)
        self.divergence.setCurrentText(c.distill.divergence)
        self.alpha.setValue(c.distill.alpha)
        self.temperature.setValue(c.distill.temperature)
        self.with_teacher_sft.setChecked(c.with_teacher_sft)
        self.with_baseline.setChecked(c.with_baseline)
        self.with_eval.setChecked(c.with_eval)
        weights = {r.name: r.weight for r in c.grpo.rewards}
        for name, check in self.reward_checks.items():
            check.setChecked(name in weights)
            self.reward_weights[name].setValue(weights.get(name, self.reward_weights[name].value()))
        self.num_generations.setValue(c.grpo.num_generations)
        self.cold_start.setChecked(c.cold_start)
        self.cold_start_steps.setValue(c.cold_start_steps)
        self.cold_start_lr.setText(f"{c.cold_start_lr:g}")
        self.beta.setValue(c.grpo.beta)
        self.quant_type.setCurrentText(c.quantize.quant_type)
        self.double_quant.setChecked(c.quantize.double_quant)
