"""The wizard's choices and how they become a :class:`engine.contract.spec.RunSpec` — plain Python, no Qt.

Pages only edit a :class:`WizardChoices`, which holds the typed sub-specs they built (``ModelSpec``,
``DataSpec``, ``DistillSpec``, ``GRPOSpec``, ``QuantizeSpec``, ``TrainSpec``), so every value in it has passed the
spec's own validation; :func:`build_spec` assembles them into the spec the engine runs, and the GUI never
disagrees with the CLI about what is allowed.
:func:`choices_from_spec` goes the other way (an edited YAML, an opened spec file), keeping every setting the
pages do not show so that spec → choices → spec gives the same spec back.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field

from engine.contract.data.presets import PRESETS
from engine.contract.spec import (
    DataSpec,
    DistillSpec,
    GRPOSpec,
    ModelSpec,
    QuantizeSpec,
    RunSpec,
    SpecError,
    TrainSpec,
    build,
    stage_kind,
    to_dict,
)
from engine.contract.stage_specs import KD_METHOD_KNOBS

METHODS: dict[str, str] = {
    "teacher_sft": "Teacher SFT — fine-tune the large model on the task",
    "student_sft": "Student SFT baseline — fine-tune the small model on the references only",
    "token_kd": "Knowledge distillation — the paper's joint loss on the teacher's token distributions",
    "sequence_kd": "Sequence-level KD — the student learns from answers the teacher generated",
    "on_policy_kd": "On-policy KD (GKD) — the student generates, the teacher scores every token",
    "cross_tokenizer_kd": "Cross-tokenizer KD — any teacher with any student: their sorted probabilities "
                          "compared by rank (ULD)",
    "grpo": "Chain-of-thought GRPO — reinforce the student with format and correctness rewards",
    "quantize": "4-bit quantization — NF4 post-training quantization with a before/after report",
    "pipeline": "The whole pipeline — teacher SFT → SFT baseline → KD → GRPO → 4-bit → evaluation",
}
KD_METHOD = {"token_kd": "token", "sequence_kd": "sequence", "on_policy_kd": "on_policy",
             "cross_tokenizer_kd": "cross_tokenizer"}
DATA_PRESET_LABELS: dict[str, str] = {  # the presets' own titles (engine/contract/data/presets.py)
    name: f"{p.title} · {p.hub_id}" if p.hub_id else p.title for name, p in PRESETS.items()}
DATA_FORMAT_LABELS: dict[str, str] = {
    "auto": "Detect from the columns",
    "columns": "Instruction / response columns (mapped below)",
    "alpaca": "Alpaca (instruction, input, output)",
    "sharegpt": "ShareGPT chats (conversations: from / value)",
    "messages": "OpenAI chats (messages: role / content)",
}
TRAIN_STAGES: dict[str, str] = {  # the wizard's training stages, by stage name
    "teacher_sft": "Teacher SFT", "student_sft": "Student SFT", "student_kd": "Distillation", "grpo": "GRPO"}
# the wizard's start, over TrainSpec's defaults: a fixed number of steps, so a first run's length is known
DEFAULT_TRAIN = {"max_steps": 200}


# The wizard's GRPO starts with a small KL penalty (bench/RESULTS_grpo.md used 0.01): the run then draws the
# grpo/kl curve the design card promises and the policy cannot drift far from its start; the engine's own
# default stays 0 (no reference model in memory) for specs written by hand.
WIZARD_GRPO_BETA = 0.01
# The cold start (issue 20): an SFT stage on the think/answer template before GRPO, so that a student that never
# saw the template (the demo's, a distilled one) earns rewards GRPO can reinforce. Its name, and the settings the
# wizard gives both stages when the method page adds it: those measured to learn on the demo (bench/RESULTS_grpo.md,
# "The wizard's cold start": with the shared lr 1e-3 for both, the cold start reached 4 % format and GRPO then
# wrecked it to 0 %; cold start 300 steps at 3e-3 then GRPO at 1e-4 reached 98-100 % format, 34 % correct).
COLD_START = "cold_start"
COLD_START_STEPS = 300
COLD_START_TRAIN = {"learning_rate": 3e-3, "sweep_learning_rates": [], "scheduler": "constant", "batch_size": 16}
GRPO_AFTER_COLD_START = {"learning_rate": 1e-4, "scheduler": "constant"}  # unless the Training page sets its own

@dataclass
class WizardChoices:
    name: str = "my-run"
    teacher: ModelSpec = field(default_factory=lambda: ModelSpec("demo:teacher"))
    student: ModelSpec = field(default_factory=lambda: ModelSpec("demo:student"))
    data: DataSpec = field(default_factory=DataSpec)
    method: str = "token_kd"
    with_teacher_sft: bool = True  # KD methods: fine-tune the teacher first
    with_baseline: bool = True  # KD methods: also train the SFT student the KD student is compared with
    with_eval: bool = True
    distill: DistillSpec = field(default_factory=DistillSpec)  # its method is the wizard method's (KD_METHOD)
    grpo: GRPOSpec = field(default_factory=lambda: GRPOSpec(beta=WIZARD_GRPO_BETA))
    # GRPO methods: an SFT stage on the think/answer template first (format cot_template), of cold_start_steps
    # optimizer steps (0: its train settings' epochs) at cold_start_lr, on cold_start_train (an opened spec's) or
    # the wizard's own with COLD_START_TRAIN
    cold_start: bool = False
    cold_start_steps: int = COLD_START_STEPS
    cold_start_lr: float = COLD_START_TRAIN["learning_rate"]
    cold_start_train: TrainSpec | None = None
    quantize: QuantizeSpec = field(default_factory=QuantizeSpec)
    # every training stage's settings when same_train; else stage name → its own (a stage without uses train)
    train: TrainSpec = field(default_factory=lambda: TrainSpec(**DEFAULT_TRAIN))
    same_train: bool = True
    stage_train: dict[str, TrainSpec] = field(default_factory=dict)
    device: str = "auto"
    max_eval_samples: int = 200
    student_references: float = 1.0  # the student stages' ``references``: < 1 lets KD show what the teacher adds
    stage_extra: dict = field(default_factory=dict)  # stage name → settings of a loaded spec the pages do not show
    run_extra: dict = field(default_factory=dict)  # the same for the run (processes, distributed, cpu_threads)

    def train_for(self, stage: str) -> TrainSpec:
        """The train settings of one stage: the shared ones, or the stage's own."""
        if self.same_train or stage not in self.stage_train:
            return self.train
        return self.stage_train[stage]


def parse_learning_rates(text: str) -> list[float]:
    """'1e-4' → [1e-4]; '1e-4, 3e-4 5e-4' → a sweep. SpecError names what cannot be read."""
    parts = [p for p in re.split(r"[,;\s]+", text.strip()) if p]
    if not parts:
        raise SpecError("train.learning_rate: is empty; give a learning rate such as 1e-4, or a list for a sweep.")
    rates = []
    for part in parts:
        try:
            rates.append(float(part))
        except ValueError:
            raise SpecError(f"train.learning_rate: {part!r} is not a number.") from None
    return rates


def _stage(kind: str, name: str, choices: WizardChoices, **managed) -> dict:
    stage = {**choices.stage_extra.get(name, {}), "kind": kind, "name": name, **managed}
    if stage_kind(kind).trains:
        stage["train"] = to_dict(choices.train_for(name))  # a copy: stages never share a settings object
    if _holds_references(kind) and managed.get("model") == "student":
        stage["references"] = choices.student_references  # the same seeded records for SFT and KD students
    return stage


def _holds_references(kind: str) -> bool:
    """Whether a kind's stages have ``references`` (the stages that learn from reference answers: SFT, KD)."""
    return any(f.name == "references" for f in dataclasses.fields(stage_kind(kind).stage_class))


def _kd_stages(choices: WizardChoices, kd_method: str) -> list[dict]:
    stages = []
    teacher = "teacher"
    if choices.with_teacher_sft:
        stages.append(_stage("sft", "teacher_sft", choices, model="teacher"))
        teacher = "teacher_sft"
    if choices.with_baseline:
        stages.append(_stage("sft", "student_sft", choices, model="student"))
    stages.append(_stage("distill", "student_kd", choices, model="student", teacher=teacher,
                         distill=distill_settings(choices.distill, kd_method)))
    return stages


def distill_settings(distill: DistillSpec, kd_method: str, values: dict | None = None) -> dict:
    """The distill block of a KD method: the settings that method reads, from ``distill`` and then ``values``
    (the page's); those it ignores are left at their defaults, as the spec requires."""
    knobs = KD_METHOD_KNOBS[kd_method]
    return {**{k: v for k, v in {**to_dict(distill), **(values or {})}.items() if k in knobs}, "method": kd_method}


def _eval_stage(choices: WizardChoices, stages: list[dict]) -> dict | None:
    names = {s["name"] for s in stages}
    if choices.method == "grpo":
        # GRPO trains the student alone: it is measured against where it started, not against a teacher it never
        # learned from (the demo's untrained teacher scored ROUGE-L 0 and took 10+ minutes to answer)
        return _stage("evaluate", "eval", choices, models={"student": "student", "grpo_student": "grpo"},
                      reference="student", max_eval_samples=choices.max_eval_samples)
    models = {"teacher": "teacher_sft" if "teacher_sft" in names else "teacher"}
    for display, stage in (("sft_student", "student_sft"), ("kd_student", "student_kd"), ("grpo_student", "grpo")):
        if stage in names:
            models[display] = stage
    if len(models) == 1:
        models["student"] = "student"
    return _stage("evaluate", "eval", choices, models=models, reference="teacher",
                  max_eval_samples=choices.max_eval_samples)


def cold_start_train(choices: WizardChoices) -> dict:
    """The cold start's train settings: an opened spec's (else the wizard's with the demo-measured
    COLD_START_TRAIN), with the method page's learning rate and number of steps."""
    if choices.cold_start_train is not None:
        train = to_dict(choices.cold_start_train)
    else:
        train = {**to_dict(choices.train_for(COLD_START)), **COLD_START_TRAIN}
    train["learning_rate"] = choices.cold_start_lr
    return {**train, "max_steps": choices.cold_start_steps} if choices.cold_start_steps else train


def grpo_train(choices: WizardChoices) -> dict:
    """GRPO's train settings: after a cold start, the shared ones at the demo-measured GRPO_AFTER_COLD_START rate
    (the shared 1e-3 wrecks what the cold start taught); GRPO's own from the Training page are kept as set."""
    train = to_dict(choices.train_for("grpo"))
    if choices.cold_start and (choices.same_train or "grpo" not in choices.stage_train):
        train.update(GRPO_AFTER_COLD_START)
    return train


def _grpo_stages(choices: WizardChoices, start: str) -> list[dict]:
    """GRPO from ``start``, after a cold start on the template when the choices have one."""
    if not choices.cold_start:
        return [_stage("grpo", "grpo", choices, model=start, grpo=to_dict(choices.grpo))]
    cold = _stage("sft", COLD_START, choices, model=start, format="cot_template")
    cold["train"] = cold_start_train(choices)
    grpo = _stage("grpo", "grpo", choices, model=COLD_START, grpo=to_dict(choices.grpo))
    grpo["train"] = grpo_train(choices)
    return [cold, grpo]


def stage_dicts(choices: WizardChoices) -> list[dict]:
    """The pipeline the chosen method stands for, in order."""
    m = choices.method
    if m not in METHODS:
        raise SpecError(f"method: {m!r} is not one of {', '.join(METHODS)}.")
    if m == "teacher_sft":
        stages = [_stage("sft", "teacher_sft", choices, model="teacher")]
    elif m == "student_sft":
        stages = [_stage("sft", "student_sft", choices, model="student")]
    elif m in KD_METHOD:
        stages = _kd_stages(choices, KD_METHOD[m])
    elif m == "grpo":
        stages = _grpo_stages(choices, "student")
    elif m == "quantize":
        stages = [_stage("quantize", "quantize", choices, model="student", quantize=to_dict(choices.quantize))]
    else:  # the whole pipeline
        stages = _kd_stages(choices, KD_METHOD["token_kd"])
        stages += _grpo_stages(choices, "student_kd")
        stages.append(_stage("quantize", "quantize", choices, model="grpo", quantize=to_dict(choices.quantize)))
    if choices.with_eval and m not in ("quantize",):
        stages.append(_eval_stage(choices, stages))
    return stages


def method_blocks(method: str) -> set[str]:
    """The settings blocks the method page shows for a wizard method: those of the stage kinds its pipeline
    runs whose wizard page (the contract's stage-kind table) is the method page."""
    kinds = {s["kind"] for s in stage_dicts(WizardChoices(method=method, with_eval=False))}
    return {stage_kind(k).settings for k in kinds if stage_kind(k).wizard_page == "method"}


def train_values(train: dict, lr_text: str) -> dict:
    """The train settings with the learning-rate field parsed: one value, or a sweep."""
    rates = parse_learning_rates(lr_text)
    values = dict(train)
    values["learning_rate"] = rates[0]
    values["sweep_learning_rates"] = rates if len(rates) > 1 else []
    return values


def build_spec(choices: WizardChoices) -> RunSpec:
    """The validated RunSpec; SpecError carries the spec's own one-sentence reason."""
    return build(RunSpec, {**choices.run_extra, "name": choices.name or "run", "teacher": to_dict(choices.teacher),
                           "student": to_dict(choices.student), "data": to_dict(choices.data),
                           "stages": stage_dicts(choices), "device": choices.device}, "spec")


def _method_of(stages: dict) -> str:
    """The wizard method whose pipeline has these stage names and kinds; SpecError if none has."""
    kinds = {name: stage.kind for name, stage in stages.items() if stage.kind != "evaluate"}
    cold = stages.get(COLD_START)
    if cold is not None and cold.kind == "sft" and cold.format == "cot_template" and "grpo" in kinds:
        del kinds[COLD_START]  # GRPO's cold start: part of the GRPO methods
    kd = stages.get("student_kd")
    if kd is not None and kd.kind == "distill":
        if "grpo" in kinds or "quantize" in kinds:
            return "pipeline"
        return next(m for m, k in KD_METHOD.items() if k == kd.distill.method)
    for method, kind in (("teacher_sft", "sft"), ("student_sft", "sft"), ("grpo", "grpo"),
                         ("quantize", "quantize")):
        if kinds == {method: kind}:
            return method
    raise SpecError(f"stages: {', '.join(kinds) or 'none'} is not a pipeline the wizard builds; it runs as "
                    "written, but the pages cannot show it.")


def choices_from_spec(spec: RunSpec) -> WizardChoices:
    """The wizard's choices for a spec it (or a person following its stage names) wrote, such that
    ``build_spec(choices_from_spec(spec)) == spec``; SpecError when the stages are not one of its pipelines."""
    method = _method_of({stage.name: stage for stage in spec.stages})
    spec = copy.deepcopy(spec)  # the choices own their sub-specs: editing them never changes the spec given
    stages = {stage.name: stage for stage in spec.stages}
    plain = {name: to_dict(stage) for name, stage in stages.items()}
    trains = {name: stages[name].train for name in TRAIN_STAGES if name in stages and stage_kind(stages[name]).trains}
    first = next(iter(trains.values()), None) or TrainSpec(**DEFAULT_TRAIN)
    student = next((s for s in spec.stages if _holds_references(s.kind) and s.model == "student"), None)
    run = to_dict(spec)
    choices = WizardChoices(
        name=spec.name, teacher=spec.teacher, student=spec.student, data=spec.data, method=method,
        with_teacher_sft="teacher_sft" in stages, with_baseline="student_sft" in stages,
        with_eval=any(s.kind == "evaluate" for s in spec.stages), train=copy.deepcopy(first),
        same_train=all(t == first for t in trains.values()), stage_train=trains, device=spec.device,
        student_references=student.references if student else 1.0, stage_extra=plain,
        run_extra={k: run[k] for k in ("processes", "distributed", "cpu_threads")})
    for stage in spec.stages:  # the blocks the method page edits (distill, grpo, quantize), by the kinds' table
        row = stage_kind(stage)
        if row.wizard_page == "method":
            setattr(choices, row.settings, getattr(stage, row.settings))
    if method in ("grpo", "pipeline") and COLD_START in stages:
        choices.cold_start, choices.cold_start_train = True, stages[COLD_START].train
        choices.cold_start_steps = stages[COLD_START].train.max_steps
        choices.cold_start_lr = stages[COLD_START].train.learning_rate
        if to_dict(stages["grpo"].train) != grpo_train(choices):
            choices.same_train = False  # GRPO's settings are its own, not the cold start's defaults: kept as set
    if "eval" in stages:
        choices.max_eval_samples = stages["eval"].max_eval_samples
    return choices


def command_for(spec_path: str) -> str:
    """The terminal command equivalent to launching from the wizard."""
    quoted = f"'{spec_path}'" if re.search(r"\s", spec_path) else spec_path
    return f"compression-engine run {quoted}"
