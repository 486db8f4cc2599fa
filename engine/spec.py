"""Run specs: the typed, validated description of one Compression Studio run.

A run is a list of stages (teacher SFT, student SFT, distillation, GRPO, quantization, evaluation) over one data
set and two base models. Specs are read and written as YAML or JSON; every field carries help text (reused as GUI
tooltips) and every ``__post_init__`` rejects bad values with one sentence naming the field.

Stdlib only (PyYAML imported lazily): the studio imports this module, so it must never pull in torch.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA_PRESETS = ("demo", "demo_reasoning", "dolly_en", "dolly_es", "bugnet", "pytorrent", "codeforces_cot", "local")
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
KD_METHODS = ("token", "sequence", "on_policy")
REWARDS = ("format_strict", "format_lenient", "reasoning_structure", "length", "answer_correct", "code_tests")
DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "float32", "bfloat16", "float16")
BASE_MODELS = ("teacher", "student")
PRECISIONS = ("auto", "bf16-mixed", "fp16-mixed", "bf16-pure", "fp32")


class SpecError(ValueError):
    """A spec value is invalid; the message is one sentence naming the field and what to do."""


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with help text; mutable defaults are given as ``default_factory``."""
    if default is not dataclasses.MISSING and isinstance(default, (list, dict)):
        value = default
        kwargs["default_factory"] = lambda: type(value)(value)
        default = dataclasses.MISSING
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    return field(metadata={"help": help}, **kwargs)


def field_help(cls: type, name: str) -> str:
    """The help text of a spec field (the studio shows it as a tooltip)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def _fail(where: str, message: str) -> None:
    raise SpecError(f"{where}: {message}")


def _check_choice(where: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(where, f"{value!r} is not one of {', '.join(choices)}.")


def _check_positive(where: str, value: float, *, allow_zero: bool = False) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        _fail(where, f"expected a number, got {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        _fail(where, f"must be {'≥ 0' if allow_zero else '> 0'}, got {value}.")


def _check_fraction(where: str, value: float, *, open_low: bool = False, open_high: bool = False) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        _fail(where, f"expected a number, got {value!r}.")
    low_bad = value <= 0 if open_low else value < 0
    high_bad = value >= 1 if open_high else value > 1
    if low_bad or high_bad:
        lo, hi = ("(0" if open_low else "[0"), ("1)" if open_high else "1]")
        _fail(where, f"must lie in {lo}, {hi}, got {value}.")


@dataclass
class ModelSpec:
    source: str = option("demo:teacher", "Where the model comes from: a hub id (Qwen/Qwen2.5-0.5B-Instruct), a local "
                         "folder, a .gguf file, or demo:teacher / demo:student for the embedded demo kit.")
    dtype: str = option("auto", "Weights dtype: auto (bfloat16 on a GPU that supports it, else float32), float32, "
                        "bfloat16 or float16.")
    load_in_4bit: bool = option(False, "Load the weights in 4-bit NF4 (bitsandbytes) to save memory, e.g. for a "
                                "large frozen teacher.")
    revision: str = option("", "Hub revision (branch, tag or commit); empty for the default.")

    def __post_init__(self) -> None:
        if not str(self.source).strip():
            _fail("model.source", "is empty; give a hub id, a local folder, a .gguf file or demo:teacher.")
        _check_choice("model.dtype", self.dtype, DTYPES)


@dataclass
class DataSpec:
    preset: str = option("demo", "Data set: demo, demo_reasoning, dolly_en, dolly_es, bugnet, pytorrent, "
                         "codeforces_cot, or local (a JSONL/JSON/CSV/Parquet file given in path).")
    path: str = option("", "Local file (local preset), or a local copy of a preset's data to use instead of the hub.")
    columns: dict = option({}, "Column mapping for local files: canonical name → column in the file. Canonical "
                           "names: instruction (required), response (required for training), context, category, "
                           "answer, tests.")
    max_samples: int = option(0, "Use at most this many records (0 = all); applied before splitting.")
    validation_fraction: float = option(0.05, "Fraction of records held out for validation during training.")
    test_fraction: float = option(0.1, "Fraction of records held out for the final evaluation.")
    max_length: int = option(512, "Truncate prompt + response to this many tokens.")
    seed: int = option(0, "Seed of the train/validation/test split.")

    def __post_init__(self) -> None:
        _check_choice("data.preset", self.preset, DATA_PRESETS)
        if self.preset == "local" and not str(self.path).strip():
            _fail("data.path", "is empty; the local preset needs the path of a JSONL, JSON, CSV or Parquet file.")
        if not isinstance(self.columns, dict):
            _fail("data.columns", f"must map canonical names to column names, got {self.columns!r}.")
        _check_positive("data.max_samples", self.max_samples, allow_zero=True)
        _check_fraction("data.validation_fraction", self.validation_fraction, open_high=True)
        _check_fraction("data.test_fraction", self.test_fraction, open_high=True)
        if self.validation_fraction + self.test_fraction >= 1:
            _fail("data.test_fraction", "validation_fraction + test_fraction must leave records for training.")
        if not isinstance(self.max_length, int) or self.max_length < 16:
            _fail("data.max_length", f"must be an integer ≥ 16, got {self.max_length!r}.")


@dataclass
class LoraSpec:
    enabled: bool = option(False, "Train LoRA adapters (peft) instead of all weights.")
    r: int = option(16, "LoRA rank.")
    alpha: int = option(32, "LoRA scaling alpha.")
    dropout: float = option(0.05, "LoRA dropout.")
    target_modules: str = option("all-linear", "Modules to adapt: all-linear, or a comma-separated list of names.")
    quantized_base: bool = option(False, "QLoRA: load the base model in 4 bits (NF4) and train LoRA adapters on it "
                                  "(implies enabled); on save the adapters are merged into a full-precision copy "
                                  "of the base.")

    def __post_init__(self) -> None:
        _check_positive("lora.r", self.r)
        _check_positive("lora.alpha", self.alpha)
        _check_fraction("lora.dropout", self.dropout, open_high=True)


@dataclass
class TrainSpec:
    learning_rate: float = option(1e-3, "Peak learning rate (AdamW).")
    sweep_learning_rates: list = option([], "Learning-rate sweep: one model per value; the best on validation "
                                        "loss is kept. Empty for a single run at learning_rate.")
    epochs: float = option(1.0, "Passes over the training split (ignored when max_steps > 0).")
    max_steps: int = option(0, "Stop after this many optimizer steps (0 = use epochs).")
    batch_size: int = option(8, "Sequences per device per step.")
    gradient_accumulation: int = option(1, "Steps to accumulate before each optimizer update.")
    warmup_ratio: float = option(0.05, "Fraction of steps spent warming the learning rate up.")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    scheduler: str = option("cosine", "Learning-rate schedule: linear, cosine or constant.")
    logging_steps: int = option(5, "Emit training metrics every this many steps.")
    save_steps: int = option(100, "Save a resumable checkpoint every this many steps.")
    gradient_checkpointing: bool = option(False, "Recompute activations in backward to save memory.")
    precision: str = option("auto", "Training precision: auto (fp32 weights with bf16 autocast on a GPU that "
                            "supports it, fp16 autocast with loss scaling on one that does not, fp32 on the CPU), "
                            "bf16-mixed, fp16-mixed (CUDA only), bf16-pure (bf16 weights: saves memory but small "
                            "updates round away; only by explicit choice) or fp32.")
    lora: LoraSpec = option(default_factory=LoraSpec, help="LoRA settings.")
    seed: int = option(0, "Seed of initialisation-free randomness (data order, dropout).")

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):
            self.lora = build(LoraSpec, self.lora, "train.lora")
        _check_positive("train.learning_rate", self.learning_rate)
        if not isinstance(self.sweep_learning_rates, list):
            _fail("train.sweep_learning_rates", "must be a list of learning rates.")
        for i, lr in enumerate(self.sweep_learning_rates):
            _check_positive(f"train.sweep_learning_rates[{i}]", lr)
        _check_positive("train.epochs", self.epochs)
        _check_positive("train.max_steps", self.max_steps, allow_zero=True)
        _check_positive("train.batch_size", self.batch_size)
        _check_positive("train.gradient_accumulation", self.gradient_accumulation)
        _check_fraction("train.warmup_ratio", self.warmup_ratio, open_high=True)
        _check_positive("train.weight_decay", self.weight_decay, allow_zero=True)
        _check_choice("train.precision", self.precision, PRECISIONS)
        _check_choice("train.scheduler", self.scheduler, ("linear", "cosine", "constant"))
        _check_positive("train.logging_steps", self.logging_steps)
        _check_positive("train.save_steps", self.save_steps)


@dataclass
class TeacherCacheSpec:
    enabled: bool = option(False, "Token KD: run the teacher once over the data and keep its top-k log-probabilities "
                           "per response token (plus the rest of its mass as one tail bucket) in the run store; "
                           "every sweep point, epoch, resume and later run reads them instead of the teacher.")
    top_k: int = option(64, "Teacher probabilities kept per token; the divergence is exact over these plus the "
                        "tail bucket.")
    batch_size: int = option(8, "Sequences the teacher reads at once while the cache is built.")
    path: str = option("", "Use this existing cache folder (refused if it was built for another teacher, data, "
                       "template, length, k or temperature); empty: the run store's cache for this key.")

    def __post_init__(self) -> None:
        _check_positive("distill.teacher_cache.top_k", self.top_k)
        _check_positive("distill.teacher_cache.batch_size", self.batch_size)


@dataclass
class DistillSpec:
    method: str = option("token", "token: the paper's joint loss on teacher logits; sequence: learn from answers "
                         "the teacher generated; on_policy: GKD, the student generates and the teacher scores.")
    alpha: float = option(0.5, "Weight of the cross-entropy on references; 1 − alpha weighs the divergence.")
    temperature: float = option(1.0, "Softmax temperature T of both distributions; the divergence is scaled by T².")
    divergence: str = option("forward_kl", "D(p_T ‖ p_S): forward_kl, reverse_kl or jsd (generalized JSD).")
    jsd_beta: float = option(0.5, "β of the generalized JSD (0 → forward KL, 1 → reverse KL).")
    top_k: int = option(0, "Live teacher: use only its top-k probabilities, renormalised (0 = the full "
                        "vocabulary). The teacher cache has its own top_k.")
    chunk_size: int = option(1024, "Response tokens per chunk when computing the divergence (memory knob).")
    sequence_mix: float = option(0.0, "Sequence-level KD: fraction of training examples that keep the reference "
                                 "answer instead of the teacher's.")
    max_new_tokens: int = option(128, "Sequence-level / on-policy KD: longest generated answer.")
    teacher_cache: TeacherCacheSpec = option(default_factory=TeacherCacheSpec,
                                             help="Offline token KD: the teacher's top-k targets computed once.")

    def __post_init__(self) -> None:
        if isinstance(self.teacher_cache, dict):
            self.teacher_cache = build(TeacherCacheSpec, self.teacher_cache, "distill.teacher_cache")
        _check_choice("distill.method", self.method, KD_METHODS)
        _check_fraction("distill.alpha", self.alpha)
        _check_positive("distill.temperature", self.temperature)
        _check_choice("distill.divergence", self.divergence, DIVERGENCES)
        _check_fraction("distill.jsd_beta", self.jsd_beta)
        _check_positive("distill.top_k", self.top_k, allow_zero=True)
        _check_positive("distill.chunk_size", self.chunk_size)
        _check_fraction("distill.sequence_mix", self.sequence_mix)
        _check_positive("distill.max_new_tokens", self.max_new_tokens)


@dataclass
class GenerationSpec:
    max_new_tokens: int = option(128, "Longest generated answer in tokens.")
    greedy: bool = option(True, "Greedy decoding (deterministic); otherwise sample with temperature and top_p.")
    temperature: float = option(0.7, "Sampling temperature (when not greedy).")
    top_p: float = option(0.9, "Nucleus sampling threshold (when not greedy).")
    batch_size: int = option(16, "Prompts generated at once.")

    def __post_init__(self) -> None:
        _check_positive("generation.max_new_tokens", self.max_new_tokens)
        _check_positive("generation.temperature", self.temperature)
        _check_fraction("generation.top_p", self.top_p, open_low=True)
        _check_positive("generation.batch_size", self.batch_size)


@dataclass
class RewardSpec:
    name: str = option("answer_correct", "Reward function: " + ", ".join(REWARDS) + ".")
    weight: float = option(1.0, "Weight of this reward in the total.")

    def __post_init__(self) -> None:
        _check_choice("reward.name", self.name, REWARDS)
        if not isinstance(self.weight, (int, float)):
            _fail("reward.weight", f"expected a number, got {self.weight!r}.")


@dataclass
class GRPOSpec:
    num_generations: int = option(4, "Completions sampled per prompt (the group).")
    max_completion_length: int = option(128, "Longest completion in tokens.")
    beta: float = option(0.0, "KL coefficient β against the reference model (0 = no reference model).")
    temperature: float = option(1.0, "Sampling temperature of the completions.")
    template: str = option("Think step by step inside <think></think>, then give only the final answer inside "
                           "<answer></answer>.\n\n{prompt}", "Prompt template; {prompt} is the task.")
    rewards: list = option([{"name": "format_strict", "weight": 0.2}, {"name": "reasoning_structure", "weight": 0.1},
                            {"name": "answer_correct", "weight": 1.0}],
                           "Reward functions and their weights.")
    length_range: list = option([16, 128], "Length shaping: completion lengths (tokens) inside this range earn "
                                "the full length reward.")
    sample_every: int = option(10, "Emit a sample completion with its rewards every this many steps.")
    quantized_base: bool = option(False, "QLoRA: load the base model in 4 bits and train LoRA adapters.")
    allow_unsandboxed_code: bool = option(False, "Run the code_tests reward's model-written programs even where "
                                          "the kernel offers no sandbox (no Landlock, no bubblewrap): they could "
                                          "then read and change your files. Leave off unless the engine itself "
                                          "runs in a container or VM.")

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            _fail("grpo.num_generations", f"must be ≥ 2 (GRPO compares completions in a group), got "
                  f"{self.num_generations}.")
        _check_positive("grpo.max_completion_length", self.max_completion_length)
        _check_positive("grpo.beta", self.beta, allow_zero=True)
        _check_positive("grpo.temperature", self.temperature)
        if "{prompt}" not in self.template:
            _fail("grpo.template", "has no {prompt} slot for the task.")
        self.rewards = [r if isinstance(r, RewardSpec) else build(RewardSpec, r, f"grpo.rewards[{i}]")
                        for i, r in enumerate(self.rewards)]
        if not self.rewards:
            _fail("grpo.rewards", "is empty; name at least one reward function.")
        if (not isinstance(self.length_range, list) or len(self.length_range) != 2
                or not 0 < self.length_range[0] <= self.length_range[1]):
            _fail("grpo.length_range", f"must be [low, high] with 0 < low ≤ high, got {self.length_range!r}.")
        _check_positive("grpo.sample_every", self.sample_every)
        if not isinstance(self.allow_unsandboxed_code, bool):
            _fail("grpo.allow_unsandboxed_code", f"must be true or false, got {self.allow_unsandboxed_code!r}.")


@dataclass
class QuantizeSpec:
    quant_type: str = option("nf4", "4-bit format: nf4 or fp4.")
    double_quant: bool = option(True, "Also quantize the quantization constants (saves ~0.4 bit per weight).")
    compute_dtype: str = option("float32", "Dtype the 4-bit weights are de-quantized to for matmuls: float32, "
                                "bfloat16 or float16.")
    report: bool = option(True, "Measure size, memory, load time, latency and ROUGE-L before and after.")

    def __post_init__(self) -> None:
        _check_choice("quantize.quant_type", self.quant_type, ("nf4", "fp4"))
        _check_choice("quantize.compute_dtype", self.compute_dtype, ("float32", "bfloat16", "float16"))


GGUF_FORMATS = ("f16", "q8_0", "q4_0", "q4_k_m")


@dataclass
class ExportSpec:
    formats: list = option(["f16", "q8_0"], "GGUF files to write for llama.cpp / Ollama / LM Studio: f16, q8_0, "
                           "q4_0, and q4_k_m (needs llama-cpp-python, the compression-studio[gguf] extra).")
    ollama: bool = option(True, "Also write an Ollama Modelfile (FROM the smallest file, chat TEMPLATE, stop "
                          "tokens): ollama create NAME -f Modelfile.")

    def __post_init__(self) -> None:
        if not isinstance(self.formats, list) or not self.formats:
            _fail("export.formats", "must be a non-empty list of GGUF formats, e.g. [f16, q4_k_m].")
        for i, fmt in enumerate(self.formats):
            _check_choice(f"export.formats[{i}]", fmt, GGUF_FORMATS)


STAGE_KINDS = ("sft", "distill", "grpo", "quantize", "evaluate", "export")


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
    max_eval_samples: int = option(200, "Evaluate: at most this many held-out records (0 = all).")
    references: float = option(1.0, "Fraction of training records whose reference answers this stage may use "
                               "(a seeded choice, the same records in every stage). Distillation has the "
                               "teacher answer the others; SFT simply has fewer examples.")

    def __post_init__(self) -> None:
        _check_choice("stage.kind", self.kind, STAGE_KINDS)
        if not self.name:
            self.name = self.kind
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            _fail("stage.name", f"{self.name!r} may use only letters, digits, '_', '.' and '-'.")
        for key, cls in _STAGE_SUBSPECS.items():
            value = getattr(self, key)
            if isinstance(value, dict):
                setattr(self, key, build(cls, value, f"{self.name}.{key}"))
        if self.kind == "evaluate" and self.models and self.reference not in self.models:
            _fail(f"{self.name}.reference", f"{self.reference!r} is not one of the evaluated models "
                  f"({', '.join(self.models)}).")
        _check_positive(f"{self.name}.max_eval_samples", self.max_eval_samples, allow_zero=True)
        _check_fraction(f"{self.name}.references", self.references, open_low=True)


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
    processes: int = option(1, "Processes (one per GPU) started through accelerate launch; 1 = a plain process.")
    distributed: str = option("ddp", "How several processes share the work: ddp, fsdp, deepspeed, or "
                              "config:/path/to/accelerate.yaml.")
    cpu_threads: int = option(0, "CPU threads for torch when training on the CPU (0 = torch's default, one per "
                              "core). Tiny models run faster on one thread: thread start-up costs more than "
                              "their matrix products.")

    def __post_init__(self) -> None:
        for key, cls in (("teacher", ModelSpec), ("student", ModelSpec), ("data", DataSpec)):
            value = getattr(self, key)
            if isinstance(value, dict):
                setattr(self, key, build(cls, value, key))
        if not isinstance(self.stages, list):
            _fail("stages", "must be a list of stages.")
        self.stages = [s if isinstance(s, StageSpec) else build(StageSpec, s, f"stages[{i}]")
                       for i, s in enumerate(self.stages)]
        if not self.stages:
            _fail("stages", "is empty; add at least one stage (sft, distill, grpo, quantize, evaluate or export).")
        _check_choice("device", self.device, DEVICES)
        _check_positive("processes", self.processes)
        _check_positive("cpu_threads", self.cpu_threads, allow_zero=True)
        if self.distributed not in ("ddp", "fsdp", "deepspeed") and not str(self.distributed).startswith("config:"):
            _fail("distributed", f"{self.distributed!r} is not one of ddp, fsdp, deepspeed or config:PATH.")
        self._check_references()

    def _check_references(self) -> None:
        known = set(BASE_MODELS)
        for stage in self.stages:
            if stage.name in known:
                _fail(f"stages.{stage.name}", "names a stage like an earlier stage or a base model; rename it.")
            refs = {"model": stage.model}
            if stage.kind == "distill":
                refs["teacher"] = stage.teacher
            if stage.kind == "evaluate":
                refs.update({f"models.{k}": v for k, v in stage.models.items()})
            for where, ref in refs.items():
                if ref not in known and not _looks_like_path(ref):
                    _fail(f"{stage.name}.{where}", f"{ref!r} is neither teacher, student, an earlier stage "
                          f"({', '.join(sorted(known - set(BASE_MODELS))) or 'none yet'}) nor a model folder.")
            known.add(stage.name)

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or ref.startswith(("~", ".", "demo:")) or ref.endswith(".gguf")


def build(cls: type, values: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, naming unknown keys instead of failing with a TypeError."""
    where = where or cls.__name__
    if not isinstance(values, dict):
        raise SpecError(f"{where}: expected a mapping of settings, got {type(values).__name__}.")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise SpecError(f"{where}: unknown setting {unknown[0]!r}; known settings are {', '.join(sorted(names))}.")
    try:
        return cls(**values)
    except TypeError as exc:  # wrong value types deep in a constructor
        raise SpecError(f"{where}: {exc}.") from None


def to_dict(spec: Any) -> dict:
    """Plain-data form of a spec, ready for YAML or JSON."""
    return dataclasses.asdict(spec)


def load_spec(path: str | Path) -> RunSpec:
    """Read a run spec from a .yaml/.yml or .json file; SpecError names the file and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec file ({exc.strerror}).") from None
    try:
        values = parse_spec_text(text, json_format=path.suffix.lower() == ".json")
        return build(RunSpec, values, "spec")
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def parse_spec_text(text: str, *, json_format: bool = False) -> dict:
    if json_format:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"line {exc.lineno}: invalid JSON ({exc.msg}).") from None
    else:
        import yaml  # lazy: keeps this module stdlib-only at import time

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f"line {mark.line + 1}: " if mark else ""
            raise SpecError(f"{line}invalid YAML ({getattr(exc, 'problem', exc)}).") from None
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
