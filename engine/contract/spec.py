"""Run specs: the typed, validated description of one Compression Studio run.

A run is a list of stages (teacher SFT, student SFT, distillation, GRPO, quantization, evaluation) over one data
set and two base models. Specs are read and written as YAML or JSON; every field carries help text (reused as GUI
tooltips) and every ``__post_init__`` rejects bad values with one sentence naming the field.

Stdlib only (PyYAML imported lazily): the studio imports this module, so it must never pull in torch.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

# The F401s below: re-exported names; spec.py is the contract's front door for the studio and the engine.
from engine.contract.bounded_text import MAX_SPEC_BYTES, parse_bounded, read_spec_file  # noqa: F401
from engine.contract.errors import SpecError, echo  # SpecError re-exported
from engine.contract.spec_fields import (DEFAULT_HIGH, SEED_HIGH, STEPS_HIGH, TOKENS_HIGH, build,  # noqa: F401
                                         check_choice, check_finite, check_fraction, check_numbers,
                                         check_positive, check_value, fail, field_help, nested, option, to_dict,
                                         updated)
from engine.contract.stage_specs import (DistillSpec, ExportSpec, GenerationSpec, GRPOSpec,  # noqa: F401
                                         QuantizeSpec, RewardSpec, TeacherCacheSpec)
from engine.contract.vocabulary import (BASE_MODELS, DATA_FORMATS, DATA_PRESETS, DEVICES, DIVERGENCES,  # noqa: F401
                                        DISTRIBUTED_CONFIG_PREFIX, DISTRIBUTED_STRATEGIES, DTYPES, GGUF_FORMATS,
                                        KD_METHODS, PRECISIONS, QUANT_TYPES, REPORT_TO, REWARDS, SCHEDULERS,
                                        STAGE_KINDS)


@dataclass
class ModelSpec:
    source: str = option("demo:teacher", "Where the model comes from: a hub id (Qwen/Qwen2.5-0.5B-Instruct), a local "
                         "folder, a .gguf file, or demo:teacher / demo:student for the embedded demo kit.")
    dtype: str = option("auto", "Weights dtype for inference (a frozen teacher, evaluation, chat): auto (bfloat16 on "
                        "a GPU that supports it, else float32), float32, bfloat16 or float16. A model being trained "
                        "loads in its stage's train.precision instead (fp32 master weights unless bf16-pure).")
    load_in_4bit: bool = option(False, "Load the weights in 4-bit NF4 (bitsandbytes) to save memory, e.g. for a "
                                "large frozen teacher.")
    revision: str = option("", "Hub revision (branch, tag or commit); empty for the default.")

    def __post_init__(self) -> None:
        check_numbers(self, "model")
        if not str(self.source).strip():
            fail("model.source", "is empty; give a hub id, a local folder, a .gguf file or demo:teacher.")
        check_choice("model.dtype", self.dtype, DTYPES)


@dataclass
class DataSpec:
    preset: str = option("demo", "Data set: demo, demo_reasoning, dolly_en, dolly_es, bugnet, pytorrent, "
                         "codeforces_cot, local (a JSONL/JSON/CSV/Parquet file given in path), or hub (any data set "
                         "on the Hugging Face hub, given in hub_id).")
    path: str = option("", "Local file (local preset), or a local copy of a preset's or hub data set's data to use "
                       "instead of the hub.")
    hub_id: str = option("", "Hub preset: the data set's id on the Hugging Face hub, e.g. tatsu-lab/alpaca or "
                         "HuggingFaceH4/no_robots.")
    hub_config: str = option("", "Hub preset: the data set's configuration (subset), if it has several.")
    split: str = option("train", "Hub preset: the split to read, e.g. train or train_sft.")
    format: str = option("auto", "How rows are laid out: auto (detected from the columns), columns (instruction/"
                         "response columns, see columns), alpaca (instruction, input, output), sharegpt "
                         "(conversations: [{from, value}]) or messages (OpenAI: [{role, content}]). Chat formats "
                         "train on every assistant turn.")
    columns: dict = option({}, "Column mapping: canonical name → column in the data. Canonical names: instruction "
                           "(required), response (required for training), context, category, answer, tests, id, "
                           "and messages (the conversation column of chat data).")
    roles: dict = option({}, "Chat formats: role names in the data → user, assistant or system (human/gpt/system, "
                         "user/assistant and bot/model are known already).")
    max_samples: int = option(0, high=10 ** 9, help="Use at most this many records (0 = all); applied before "
                              "splitting.")
    validation_fraction: float = option(0.05, "Fraction of records held out for validation during training.")
    test_fraction: float = option(0.1, "Fraction of records held out for the final evaluation.")
    max_length: int = option(512, high=TOKENS_HIGH, help="Truncate prompt + response to this many tokens.")
    seed: int = option(0, high=SEED_HIGH, help="Seed of the train/validation/test split.")

    def __post_init__(self) -> None:
        check_numbers(self, "data")
        check_choice("data.preset", self.preset, DATA_PRESETS)
        if self.preset == "local" and not str(self.path).strip():
            fail("data.path", "is empty; the local preset needs the path of a JSONL, JSON, CSV or Parquet file.")
        if self.preset == "hub" and not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(self.hub_id).strip()):
            fail("data.hub_id", f"{echo(self.hub_id)} is not a hub data set id; the hub preset needs one like "
                  "tatsu-lab/alpaca.")
        check_choice("data.format", self.format, DATA_FORMATS)
        if not str(self.split).strip():
            fail("data.split", "is empty; name the split to read, e.g. train.")
        if not isinstance(self.columns, dict):
            fail("data.columns", f"must map canonical names to column names, got {echo(self.columns)}.")
        if not isinstance(self.roles, dict) or any(v not in ("user", "assistant", "system")
                                                   for v in self.roles.values()):
            fail("data.roles", f"must map role names in the data to user, assistant or system, got {echo(self.roles)}.")
        check_positive("data.max_samples", self.max_samples, allow_zero=True)
        check_positive("data.seed", self.seed, allow_zero=True)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.columns.items()):
            fail("data.columns", "must map canonical names to column names (text), e.g. {instruction: question}.")
        check_fraction("data.validation_fraction", self.validation_fraction, open_high=True)
        check_fraction("data.test_fraction", self.test_fraction, open_high=True)
        if self.validation_fraction + self.test_fraction >= 1:
            fail("data.test_fraction", "validation_fraction + test_fraction must leave records for training.")
        if not isinstance(self.max_length, int) or self.max_length < 16:
            fail("data.max_length", f"must be an integer ≥ 16, got {echo(self.max_length)}.")


@dataclass
class LoraSpec:
    enabled: bool = option(False, "Train LoRA adapters (peft) instead of all weights.")
    r: int = option(16, "LoRA rank.", high=65536)
    alpha: int = option(32, "LoRA scaling alpha.", high=10 ** 6)
    dropout: float = option(0.05, "LoRA dropout.")
    target_modules: str = option("all-linear", "Modules to adapt: all-linear, or a comma-separated list of names.")
    quantized_base: bool = option(False, "QLoRA: load the base model in 4 bits (NF4) and train LoRA adapters on it "
                                  "(implies enabled); on save the adapters are merged into a full-precision copy "
                                  "of the base.")

    def __post_init__(self) -> None:
        check_numbers(self, "lora")
        check_positive("lora.r", self.r)
        check_positive("lora.alpha", self.alpha)
        check_fraction("lora.dropout", self.dropout, open_high=True)


@dataclass
class TrainSpec:
    learning_rate: float = option(1e-3, "Peak learning rate (AdamW).", high=1.0,
                                  hint="a learning rate above 1 makes every weight diverge; typical values are "
                                  "1e-5 to 1e-3")
    sweep_learning_rates: list = option([], "Learning-rate sweep: one model per value; the best on validation "
                                        "loss is kept. Empty for a single run at learning_rate.")
    epochs: float = option(1.0, high=10 ** 6, help="Passes over the training split (ignored when max_steps > 0).")
    max_steps: int = option(0, high=STEPS_HIGH, help="Stop after this many optimizer steps (0 = use epochs).")
    batch_size: int = option(8, high=1 << 16, help="Sequences per device per step.")
    gradient_accumulation: int = option(1, high=1 << 16, help="Steps to accumulate before each optimizer update.")
    warmup_ratio: float = option(0.05, "Fraction of steps spent warming the learning rate up.")
    weight_decay: float = option(0.0, "AdamW weight decay.", high=10.0)
    scheduler: str = option(SCHEDULERS[0], "Learning-rate schedule: " + ", ".join(SCHEDULERS) + ".")
    logging_steps: int = option(5, high=STEPS_HIGH, help="Emit training metrics every this many steps.")
    save_steps: int = option(100, high=STEPS_HIGH, help="Save a resumable checkpoint every this many steps.")
    gradient_checkpointing: bool = option(False, "Recompute activations in backward to save memory.")
    precision: str = option("auto", "Training precision: auto (fp32 weights with bf16 autocast on a GPU that "
                            "supports it, fp16 autocast with loss scaling on one that does not, fp32 on the CPU), "
                            "bf16-mixed, fp16-mixed (CUDA only), bf16-pure (bf16 weights: saves memory but small "
                            "updates round away; only by explicit choice) or fp32.")
    lora: LoraSpec = option(default_factory=LoraSpec, help="LoRA settings.")
    seed: int = option(0, high=SEED_HIGH, help="Seed of initialisation-free randomness (data order, dropout).")

    def __post_init__(self) -> None:
        check_numbers(self, "train")
        self.lora = nested(LoraSpec, self.lora, "train.lora")
        check_positive("train.learning_rate", self.learning_rate, high=1.0)
        if not isinstance(self.sweep_learning_rates, list):
            fail("train.sweep_learning_rates", "must be a list of learning rates.")
        for i, lr in enumerate(self.sweep_learning_rates):
            check_positive(f"train.sweep_learning_rates[{i}]", lr, high=1.0)
        check_positive("train.seed", self.seed, allow_zero=True)
        check_positive("train.epochs", self.epochs)
        check_positive("train.max_steps", self.max_steps, allow_zero=True)
        check_positive("train.batch_size", self.batch_size)
        check_positive("train.gradient_accumulation", self.gradient_accumulation)
        check_fraction("train.warmup_ratio", self.warmup_ratio, open_high=True)
        check_positive("train.weight_decay", self.weight_decay, allow_zero=True)
        check_choice("train.precision", self.precision, PRECISIONS)
        check_choice("train.scheduler", self.scheduler, SCHEDULERS)
        check_positive("train.logging_steps", self.logging_steps)
        check_positive("train.save_steps", self.save_steps)




_NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"  # stage and display names: they become file names


@dataclass
class StageSpec:
    """One step of the pipeline. ``model`` and ``teacher`` name a base model (teacher, student) or an earlier
    stage, whose output model they then use; ``models`` (evaluate) maps display names to such references."""

    kind: str = option("sft", "What the stage does: " + ", ".join(STAGE_KINDS) + ".")
    name: str = option("", "Unique name of the stage; its output model is saved under models/<name>.")
    model: str = option("student", "The model this stage trains, quantizes or exports: teacher, student, an "
                        "earlier stage's name or a model folder.")
    teacher: str = option("teacher", "Distillation: the teacher model (teacher or an earlier stage's name).")
    models: dict = option({}, "Evaluate: display name → model reference, e.g. {teacher: teacher_sft}.")
    reference: str = option("teacher", "Evaluate: the display name that retention is measured against.")
    train: TrainSpec = option(default_factory=TrainSpec, help="Optimisation settings.")
    distill: DistillSpec = option(default_factory=DistillSpec, help="Distillation settings.")
    grpo: GRPOSpec = option(default_factory=GRPOSpec, help="GRPO settings.")
    quantize: QuantizeSpec = option(default_factory=QuantizeSpec, help="Quantization settings.")
    export: ExportSpec = option(default_factory=ExportSpec, help="GGUF export settings.")
    generation: GenerationSpec = option(default_factory=GenerationSpec, help="Generation settings (evaluation, "
                                        "sequence-level KD).")
    max_eval_samples: int = option(200, high=10 ** 9, help="Evaluate: at most this many held-out records (0 = all).")
    eval_minutes: float = option(0.0, high=10 ** 6, help="Evaluate and the 4-bit report: minutes the held-out "
                                 "answers may take; fewer samples are used where the device is too slow for "
                                 "max_eval_samples (the events and the report say so). 0 = sized to the device: "
                                 "10 minutes on a CPU, no limit on a GPU.")
    references: float = option(1.0, "Fraction of training records whose reference answers this stage may use "
                               "(a seeded choice, the same records in every stage). Distillation has the "
                               "teacher answer the others; SFT simply has fewer examples.")

    def __post_init__(self) -> None:
        check_choice("stage.kind", self.kind, STAGE_KINDS)
        check_numbers(self, self.name if isinstance(self.name, str) and self.name else "stage")
        if not self.name:
            self.name = self.kind
        # the name becomes a folder name (models/<name>): never '.', '..' or a hidden or over-long name
        if not isinstance(self.name, str) or not re.fullmatch(_NAME_PATTERN, self.name):
            fail("stage.name", f"{echo(self.name)} must start with a letter, digit or '_', use only letters, digits, "
                  "'_', '.' and '-', and have at most 64 characters.")
        if not isinstance(self.models, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in self.models.items()):
            fail(f"{self.name}.models", "must map display names to model references (text), e.g. "
                  "{teacher: teacher_sft}.")
        for display in self.models:  # a display name becomes a file name (predictions-<name>.jsonl) too
            if not re.fullmatch(_NAME_PATTERN, display):
                fail(f"{self.name}.models", f"display name {echo(display)} must start with a letter, digit or '_', use "
                      "only letters, digits, '_', '.' and '-', and have at most 64 characters.")
        for key, cls in _STAGE_SUBSPECS.items():
            setattr(self, key, nested(cls, getattr(self, key), f"{self.name}.{key}"))
        if self.kind == "evaluate" and self.models and self.reference not in self.models:
            fail(f"{self.name}.reference", f"{echo(self.reference)} is not one of the evaluated models "
                  f"({', '.join(self.models)}).")
        check_positive(f"{self.name}.max_eval_samples", self.max_eval_samples, allow_zero=True)
        check_positive(f"{self.name}.eval_minutes", self.eval_minutes, allow_zero=True)
        check_fraction(f"{self.name}.references", self.references, open_low=True)


_STAGE_SUBSPECS = {"train": TrainSpec, "distill": DistillSpec, "grpo": GRPOSpec, "quantize": QuantizeSpec,
                   "export": ExportSpec, "generation": GenerationSpec}


@dataclass
class RunSpec:
    name: str = option("run", "A short name for the run (shown in the run history).")
    teacher: ModelSpec = option(default_factory=lambda: ModelSpec("demo:teacher"), help="The large model.")
    student: ModelSpec = option(default_factory=lambda: ModelSpec("demo:student"), help="The small model.")
    data: DataSpec = option(default_factory=DataSpec, help="The task data.")
    stages: list = option([], "The pipeline, in order.")
    device: str = option("auto", "Where to train: auto (CUDA, then MPS, then CPU), cuda, mps or cpu.")
    processes: int = option(1, high=4096, help="Processes (one per GPU) started through accelerate launch; 1 = a "
                            "plain process.")
    distributed: str = option(DISTRIBUTED_STRATEGIES[0], "How several processes share the work: "
                              + ", ".join(DISTRIBUTED_STRATEGIES) + f", or {DISTRIBUTED_CONFIG_PREFIX}"
                              "/path/to/accelerate.yaml.")
    report_to: list = option([], "Experiment trackers the training stages also report to, when installed: "
                             + ", ".join(REPORT_TO) + ". TensorBoard event files are written to the run folder's "
                             "tensorboard/ in any case.")
    cpu_threads: int = option(0, high=1 << 16, help="CPU threads for torch when training on the CPU (0 = torch's "
                              "default, one per "
                              "core). Tiny models run faster on one thread: thread start-up costs more than "
                              "their matrix products.")

    def __post_init__(self) -> None:
        check_numbers(self, "")
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 200:
            fail("name", f"must be a short text (1 to 200 characters), got {echo(self.name, 40)}.")
        for key, cls in (("teacher", ModelSpec), ("student", ModelSpec), ("data", DataSpec)):
            setattr(self, key, nested(cls, getattr(self, key), key))
        if not isinstance(self.stages, list):
            fail("stages", "must be a list of stages.")
        self.stages = [s if isinstance(s, StageSpec) else build(StageSpec, s, f"stages[{i}]")
                       for i, s in enumerate(self.stages)]
        if not self.stages:
            fail("stages", "is empty; add at least one stage (sft, distill, grpo, quantize, evaluate or export).")
        check_choice("device", self.device, DEVICES)
        check_positive("processes", self.processes)
        check_positive("cpu_threads", self.cpu_threads, allow_zero=True)
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to] if self.report_to not in ("", "none") else []
        if not isinstance(self.report_to, list):
            fail("report_to", f"must be a list of tracker names, got {echo(self.report_to)}.")
        for name in self.report_to:
            check_choice("report_to", name, tuple(REPORT_TO))
        if (self.distributed not in DISTRIBUTED_STRATEGIES
                and not str(self.distributed).startswith(DISTRIBUTED_CONFIG_PREFIX)):
            fail("distributed", f"{echo(self.distributed)} is not one of {', '.join(DISTRIBUTED_STRATEGIES)} or "
                 f"{DISTRIBUTED_CONFIG_PREFIX}PATH.")
        self._check_references()

    def _check_references(self) -> None:
        known = set(BASE_MODELS)
        for stage in self.stages:
            if stage.name in known:
                fail(f"stages.{stage.name}", "names a stage like an earlier stage or a base model; rename it.")
            refs = {"model": stage.model}
            if stage.kind == "distill":
                refs["teacher"] = stage.teacher
            if stage.kind == "evaluate":
                refs.update({f"models.{k}": v for k, v in stage.models.items()})
            for where, ref in refs.items():
                if ref not in known and not _looks_like_path(ref):
                    fail(f"{stage.name}.{where}", f"{echo(ref)} is neither teacher, student, an earlier stage "
                          f"({', '.join(sorted(known - set(BASE_MODELS))) or 'none yet'}) nor a model folder.")
            known.add(stage.name)

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or ref.startswith(("~", ".", "demo:")) or ref.endswith(".gguf")


def load_spec(path: str | Path) -> RunSpec:
    """Read a run spec from a .yaml/.yml or .json file; SpecError names the file and the field."""
    path = Path(path)
    text = read_spec_file(path)
    try:
        values = parse_spec_text(text, json_format=path.suffix.lower() == ".json")
        return build(RunSpec, values, "spec")
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def parse_spec_text(text: str, *, json_format: bool = False) -> dict:
    """The mapping in a spec's text, refusing resource bombs (alias expansion, nesting, size) with a sentence."""
    values = parse_bounded(text, json_format=json_format)
    if not isinstance(values, dict):
        raise SpecError("the spec must be a mapping with name, teacher, student, data and stages.")
    return values


def dump_spec(spec: RunSpec, path: str | Path | None = None) -> str:
    """YAML text of a spec (written to ``path`` when given; .json paths get JSON)."""
    data = to_dict(spec)
    if path is not None and Path(path).suffix.lower() == ".json":
        text = json.dumps(data, indent=2)
    else:
        import yaml

        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def base_model_of(spec: RunSpec, ref: str) -> str:
    """The base model (teacher/student/path) a stage's output descends from; its tokenizer is the same."""
    names = {s.name: s for s in spec.stages}
    while ref in names:
        ref = names[ref].model
    return ref
