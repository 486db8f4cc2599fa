"""Run specs: the typed, validated description of one Compression Studio run.

A run is a list of stages (teacher SFT, student SFT, distillation, GRPO, quantization, evaluation) over one data
set and two base models. Specs are read and written as YAML or JSON; every field carries help text (reused as GUI
tooltips) and every ``__post_init__`` rejects bad values with one sentence naming the field.

Stdlib only (PyYAML imported lazily): the studio imports this module, so it must never pull in torch.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.contract.data.chat import FORMATS
from engine.contract.data.presets import PRESETS
from engine.contract.bounded_text import MAX_SPEC_BYTES, parse_bounded, read_spec_file  # noqa: F401
from engine.contract.errors import SpecError  # noqa: F401 (re-exported)

DATA_PRESETS = tuple(PRESETS)  # one home: engine/contract/data/presets.py
DATA_FORMATS = FORMATS  # one home: engine/contract/data/chat.py
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
QUANT_TYPES = ("nf4", "fp4")
KD_METHODS = ("token", "sequence", "on_policy")
REWARDS = ("format_strict", "format_lenient", "reasoning_structure", "length", "answer_correct", "code_tests")
DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "float32", "bfloat16", "float16")
BASE_MODELS = ("teacher", "student")
PRECISIONS = ("auto", "bf16-mixed", "fp16-mixed", "bf16-pure", "fp32")
# report_to integrations (transformers' names) → the pip package each needs
REPORT_TO = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio",
             "comet_ml": "comet-ml", "clearml": "clearml", "neptune": "neptune", "dvclive": "dvclive",
             "swanlab": "swanlab", "codecarbon": "codecarbon"}



# Numbers no setting needs to exceed (exactly representable in a double, fits torch's int64 and SQLite).
DEFAULT_HIGH = 2 ** 53
SEED_HIGH = 2 ** 32 - 1  # numpy's seeds stop here
TOKENS_HIGH = 1 << 20  # a million tokens: longer than any context window
STEPS_HIGH = 10 ** 8


def option(default: Any = dataclasses.MISSING, help: str = "", *, high: float | None = None, hint: str = "",
           **kwargs: Any) -> Any:
    """A dataclass field with help text; mutable defaults are given as ``default_factory``. ``high`` is the
    largest sane value of a numeric field (``hint`` says why, in the refusal); every numeric field, bounded or
    not, is checked finite by :func:`check_value` when a spec is built from user data."""
    if default is not dataclasses.MISSING and isinstance(default, (list, dict)):
        value = default
        kwargs["default_factory"] = lambda: type(value)(value)
        default = dataclasses.MISSING
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    return field(metadata={"help": help, "high": high, "hint": hint}, **kwargs)


def field_help(cls: type, name: str) -> str:
    """The help text of a spec field (the studio shows it as a tooltip)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def _fail(where: str, message: str) -> None:
    raise SpecError(f"{where}: {message}")


_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "list": list, "dict": dict}
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text", list: "a list",
               dict: "a mapping"}
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _declared_types(annotation: Any) -> tuple[type, ...]:
    """The plain types a field's annotation allows ("int", "str | None", "list[str]" → int / str / list); ()
    for nested specs and anything else the generic check leaves to the class."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    parts = [p.strip().split("[", 1)[0] for p in text.split("|")]
    if any(p not in _TYPES and p != "None" for p in parts):
        return ()
    return tuple(_TYPES[p] for p in parts if p in _TYPES)


def check_value(where: str, f: dataclasses.Field, value: Any) -> Any:
    """Check (and lightly coerce) one user-given value against its field's declared type: every setting goes
    through here, so a field added later is type- and finiteness-checked without code of its own. Numbers
    written as text ("1e-3", which YAML 1.1 reads as a string) become numbers; NaN, infinities and values
    above the field's ``high`` are refused."""
    types = _declared_types(f.type)
    if not types or (value is None and "None" in str(f.type)):
        return value
    numeric = [t for t in types if t in (int, float)]
    if numeric and str not in types and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if numeric and isinstance(value, float) and not math.isfinite(value):
        _fail(where, f"must be a finite number, got {value}.")
    if int in types and float not in types and isinstance(value, float) and value.is_integer():
        value = int(value)  # 1e3 or 1000.0 for a step count
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            _fail(where, f"{_magnitude(value)} is too large.")
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        _fail(where, f"expected {' or '.join(_TYPE_WORDS[t] for t in types)}, got {shown}"
                     f"{' (put text in quotes)' if str in types else ''}.")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        high = f.metadata.get("high") or DEFAULT_HIGH
        if value > high or value < -DEFAULT_HIGH:
            hint = f.metadata.get("hint")
            _fail(where, f"{_magnitude(value)} is too large (at most {high:g}){'; ' + hint if hint else ''}.")
    return value


def _magnitude(value: float) -> str:
    """A number short enough for a sentence; an int too large for a float has no '%g' (OverflowError)."""
    try:
        return f"{value:g}"
    except OverflowError:
        return f"a {int(int(value).bit_length() * 0.30103) + 1}-digit number"  # str() of it may be refused too


def _check_numbers(spec: Any, prefix: str) -> None:
    """The generic check of every numeric field of a spec object (also when it was built in code)."""
    for f in dataclasses.fields(spec):
        if any(t in (int, float) for t in _declared_types(f.type)):
            setattr(spec, f.name, check_value(f"{prefix}.{f.name}" if prefix else f.name, f, getattr(spec, f.name)))


def _nested(cls: type, value: Any, where: str) -> Any:
    """A nested settings group: built from a mapping, kept if already built, refused otherwise."""
    if isinstance(value, cls):
        return value
    return build(cls, value, where)  # SpecError "expected a mapping" for anything but a dict


def _check_choice(where: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(where, f"{value!r} is not one of {', '.join(choices)}.")


def _check_finite(where: str, value: Any) -> None:
    """A real, finite number (NaN compares false with everything, so it would pass any range check)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        _fail(where, f"expected a number, got {value!r}.")
    if not math.isfinite(value):
        _fail(where, f"must be a finite number, got {value}.")


def _check_positive(where: str, value: float, *, allow_zero: bool = False, high: float | None = None) -> None:
    _check_finite(where, value)
    if value < 0 or (value == 0 and not allow_zero):
        _fail(where, f"must be {'≥ 0' if allow_zero else '> 0'}, got {value}.")
    if high is not None and value > high:
        _fail(where, f"must be ≤ {high:g}, got {value:g}.")


def _check_fraction(where: str, value: float, *, open_low: bool = False, open_high: bool = False) -> None:
    _check_finite(where, value)
    low_bad = value <= 0 if open_low else value < 0
    high_bad = value >= 1 if open_high else value > 1
    if low_bad or high_bad:
        lo, hi = ("(0" if open_low else "[0"), ("1)" if open_high else "1]")
        _fail(where, f"must lie in {lo}, {hi}, got {value}.")


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
        _check_numbers(self, "model")
        if not str(self.source).strip():
            _fail("model.source", "is empty; give a hub id, a local folder, a .gguf file or demo:teacher.")
        _check_choice("model.dtype", self.dtype, DTYPES)


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
        _check_numbers(self, "data")
        _check_choice("data.preset", self.preset, DATA_PRESETS)
        if self.preset == "local" and not str(self.path).strip():
            _fail("data.path", "is empty; the local preset needs the path of a JSONL, JSON, CSV or Parquet file.")
        if self.preset == "hub" and not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(self.hub_id).strip()):
            _fail("data.hub_id", f"{self.hub_id!r} is not a hub data set id; the hub preset needs one like "
                  "tatsu-lab/alpaca.")
        _check_choice("data.format", self.format, DATA_FORMATS)
        if not str(self.split).strip():
            _fail("data.split", "is empty; name the split to read, e.g. train.")
        if not isinstance(self.columns, dict):
            _fail("data.columns", f"must map canonical names to column names, got {self.columns!r}.")
        if not isinstance(self.roles, dict) or any(v not in ("user", "assistant", "system")
                                                   for v in self.roles.values()):
            _fail("data.roles", f"must map role names in the data to user, assistant or system, got {self.roles!r}.")
        _check_positive("data.max_samples", self.max_samples, allow_zero=True)
        _check_positive("data.seed", self.seed, allow_zero=True)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.columns.items()):
            _fail("data.columns", "must map canonical names to column names (text), e.g. {instruction: question}.")
        _check_fraction("data.validation_fraction", self.validation_fraction, open_high=True)
        _check_fraction("data.test_fraction", self.test_fraction, open_high=True)
        if self.validation_fraction + self.test_fraction >= 1:
            _fail("data.test_fraction", "validation_fraction + test_fraction must leave records for training.")
        if not isinstance(self.max_length, int) or self.max_length < 16:
            _fail("data.max_length", f"must be an integer ≥ 16, got {self.max_length!r}.")


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
        _check_numbers(self, "lora")
        _check_positive("lora.r", self.r)
        _check_positive("lora.alpha", self.alpha)
        _check_fraction("lora.dropout", self.dropout, open_high=True)


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
    scheduler: str = option("cosine", "Learning-rate schedule: linear, cosine or constant.")
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
        _check_numbers(self, "train")
        self.lora = _nested(LoraSpec, self.lora, "train.lora")
        _check_positive("train.learning_rate", self.learning_rate, high=1.0)
        if not isinstance(self.sweep_learning_rates, list):
            _fail("train.sweep_learning_rates", "must be a list of learning rates.")
        for i, lr in enumerate(self.sweep_learning_rates):
            _check_positive(f"train.sweep_learning_rates[{i}]", lr, high=1.0)
        _check_positive("train.seed", self.seed, allow_zero=True)
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
    top_k: int = option(64, high=1 << 24, help="Teacher probabilities kept per token; the divergence is exact over "
                        "these plus the "
                        "tail bucket.")
    batch_size: int = option(8, high=1 << 16, help="Sequences the teacher reads at once while the cache is built.")
    path: str = option("", "Use this existing cache folder (refused if it was built for another teacher, data, "
                       "template, length, k or temperature); empty: the run store's cache for this key.")

    def __post_init__(self) -> None:
        _check_numbers(self, "distill.teacher_cache")
        _check_positive("distill.teacher_cache.top_k", self.top_k)
        _check_positive("distill.teacher_cache.batch_size", self.batch_size)


@dataclass
class DistillSpec:
    method: str = option("token", "token: the paper's joint loss on teacher logits; sequence: learn from answers "
                         "the teacher generated; on_policy: GKD, the student generates and the teacher scores.")
    alpha: float = option(0.5, "Weight of the cross-entropy on references; 1 − alpha weighs the divergence.")
    temperature: float = option(1.0, high=1000.0, help="Softmax temperature T of both distributions; the "
                                "divergence is scaled by T².")
    divergence: str = option("forward_kl", "D(p_T ‖ p_S): forward_kl, reverse_kl or jsd (generalized JSD).")
    jsd_beta: float = option(0.5, "β of the generalized JSD (0 → forward KL, 1 → reverse KL).")
    top_k: int = option(0, high=1 << 24, help="Live teacher: use only its top-k probabilities, renormalised (0 = "
                        "the full vocabulary). The teacher cache has its own top_k.")
    chunk_size: int = option(1024, high=TOKENS_HIGH, help="Response tokens per chunk when computing the divergence "
                             "(memory knob).")
    sequence_mix: float = option(0.0, "Sequence-level KD: fraction of training examples that keep the reference "
                                 "answer instead of the teacher's.")
    max_new_tokens: int = option(128, high=TOKENS_HIGH, help="Sequence-level / on-policy KD: longest generated "
                                 "answer.")
    teacher_cache: TeacherCacheSpec = option(default_factory=TeacherCacheSpec,
                                             help="Offline token KD: the teacher's top-k targets computed once.")

    def __post_init__(self) -> None:
        _check_numbers(self, "distill")
        self.teacher_cache = _nested(TeacherCacheSpec, self.teacher_cache, "distill.teacher_cache")
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
    max_new_tokens: int = option(128, high=TOKENS_HIGH, help="Longest generated answer in tokens.")
    greedy: bool = option(True, "Greedy decoding (deterministic); otherwise sample with temperature and top_p.")
    temperature: float = option(0.7, high=1000.0, help="Sampling temperature (when not greedy).")
    top_p: float = option(0.9, "Nucleus sampling threshold (when not greedy).")
    batch_size: int = option(16, high=1 << 16, help="Prompts generated at once.")

    def __post_init__(self) -> None:
        _check_numbers(self, "generation")
        _check_positive("generation.max_new_tokens", self.max_new_tokens)
        _check_positive("generation.temperature", self.temperature)
        _check_fraction("generation.top_p", self.top_p, open_low=True)
        _check_positive("generation.batch_size", self.batch_size)


@dataclass
class RewardSpec:
    name: str = option("answer_correct", "Reward function: " + ", ".join(REWARDS) + ".")
    weight: float = option(1.0, "Weight of this reward in the total.", high=10 ** 6)

    def __post_init__(self) -> None:
        _check_numbers(self, "reward")
        _check_choice("reward.name", self.name, REWARDS)
        _check_finite("reward.weight", self.weight)


@dataclass
class GRPOSpec:
    num_generations: int = option(4, high=1 << 14, help="Completions sampled per prompt (the group).")
    max_completion_length: int = option(128, high=TOKENS_HIGH, help="Longest completion in tokens.")
    beta: float = option(0.0, high=10 ** 4, help="KL coefficient β against the reference model (0 = no reference "
                         "model).")
    temperature: float = option(1.0, "Sampling temperature of the completions.", high=1000.0)
    template: str = option("Think step by step inside <think></think>, then give only the final answer inside "
                           "<answer></answer>.\n\n{prompt}", "Prompt template; {prompt} is the task.")
    rewards: list = option([{"name": "format_strict", "weight": 0.2}, {"name": "reasoning_structure", "weight": 0.1},
                            {"name": "answer_correct", "weight": 1.0}],
                           "Reward functions and their weights.")
    length_range: list = option([16, 128], "Length shaping: completion lengths (tokens) inside this range earn "
                                "the full length reward.")
    sample_every: int = option(10, high=STEPS_HIGH, help="Emit a sample completion with its rewards every this "
                               "many steps.")
    quantized_base: bool = option(False, "QLoRA: load the base model in 4 bits and train LoRA adapters.")
    allow_unsandboxed_code: bool = option(False, "Run the code_tests reward's model-written programs even where "
                                          "the kernel offers no sandbox (no Landlock, no bubblewrap): they could "
                                          "then read and change your files. Leave off unless the engine itself "
                                          "runs in a container or VM.")

    def __post_init__(self) -> None:
        _check_numbers(self, "grpo")
        _check_positive("grpo.num_generations", self.num_generations)
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
                or not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n <= TOKENS_HIGH
                           for n in self.length_range)
                or not self.length_range[0] <= self.length_range[1]):
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
        _check_numbers(self, "quantize")
        _check_choice("quantize.quant_type", self.quant_type, QUANT_TYPES)
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
    references: float = option(1.0, "Fraction of training records whose reference answers this stage may use "
                               "(a seeded choice, the same records in every stage). Distillation has the "
                               "teacher answer the others; SFT simply has fewer examples.")

    def __post_init__(self) -> None:
        _check_choice("stage.kind", self.kind, STAGE_KINDS)
        _check_numbers(self, self.name if isinstance(self.name, str) and self.name else "stage")
        if not self.name:
            self.name = self.kind
        # the name becomes a folder name (models/<name>): never '.', '..' or a hidden or over-long name
        if not isinstance(self.name, str) or not re.fullmatch(_NAME_PATTERN, self.name):
            _fail("stage.name", f"{self.name!r} must start with a letter, digit or '_', use only letters, digits, "
                  "'_', '.' and '-', and have at most 64 characters.")
        if not isinstance(self.models, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in self.models.items()):
            _fail(f"{self.name}.models", "must map display names to model references (text), e.g. "
                  "{teacher: teacher_sft}.")
        for display in self.models:  # a display name becomes a file name (predictions-<name>.jsonl) too
            if not re.fullmatch(_NAME_PATTERN, display):
                _fail(f"{self.name}.models", f"display name {display!r} must start with a letter, digit or '_', use "
                      "only letters, digits, '_', '.' and '-', and have at most 64 characters.")
        for key, cls in _STAGE_SUBSPECS.items():
            setattr(self, key, _nested(cls, getattr(self, key), f"{self.name}.{key}"))
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
    processes: int = option(1, high=4096, help="Processes (one per GPU) started through accelerate launch; 1 = a "
                            "plain process.")
    distributed: str = option("ddp", "How several processes share the work: ddp, fsdp, deepspeed, or "
                              "config:/path/to/accelerate.yaml.")
    report_to: list = option([], "Experiment trackers the training stages also report to, when installed: "
                             + ", ".join(REPORT_TO) + ". TensorBoard event files are written to the run folder's "
                             "tensorboard/ in any case.")
    cpu_threads: int = option(0, high=1 << 16, help="CPU threads for torch when training on the CPU (0 = torch's "
                              "default, one per "
                              "core). Tiny models run faster on one thread: thread start-up costs more than "
                              "their matrix products.")

    def __post_init__(self) -> None:
        _check_numbers(self, "")
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 200:
            _fail("name", f"must be a short text (1 to 200 characters), got {str(self.name)[:40]!r}.")
        for key, cls in (("teacher", ModelSpec), ("student", ModelSpec), ("data", DataSpec)):
            setattr(self, key, _nested(cls, getattr(self, key), key))
        if not isinstance(self.stages, list):
            _fail("stages", "must be a list of stages.")
        self.stages = [s if isinstance(s, StageSpec) else build(StageSpec, s, f"stages[{i}]")
                       for i, s in enumerate(self.stages)]
        if not self.stages:
            _fail("stages", "is empty; add at least one stage (sft, distill, grpo, quantize, evaluate or export).")
        _check_choice("device", self.device, DEVICES)
        _check_positive("processes", self.processes)
        _check_positive("cpu_threads", self.cpu_threads, allow_zero=True)
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to] if self.report_to not in ("", "none") else []
        if not isinstance(self.report_to, list):
            _fail("report_to", f"must be a list of tracker names, got {self.report_to!r}.")
        for name in self.report_to:
            _check_choice("report_to", name, tuple(REPORT_TO))
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
    unknown = sorted(str(k) for k in set(values) - names)
    if unknown:
        raise SpecError(f"{where}: unknown setting {unknown[0]!r}; known settings are {', '.join(sorted(names))}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {k: check_value(f"{where}.{k}" if where != "spec" else k, fields[k], v) for k, v in values.items()}
    try:
        return cls(**values)
    except (TypeError, AttributeError) as exc:  # wrong value types deep in a constructor
        raise SpecError(f"{where}: a setting has the wrong type ({exc}); check the spec against the documented "
                        "settings.") from None


def to_dict(spec: Any) -> dict:
    """Plain-data form of a spec, ready for YAML or JSON."""
    return dataclasses.asdict(spec)


def updated(spec: Any, values: dict, where: str = "") -> Any:
    """A new ``spec`` of the same class with ``values`` (top-level settings, nested ones as mappings) in place of
    its own, validated by :func:`build`; ``spec`` itself is left as it was. The wizard's pages keep the settings
    of an opened spec that they do not show this way."""
    return build(type(spec), {**to_dict(spec), **values}, where or type(spec).__name__)


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
