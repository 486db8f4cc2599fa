"""The settings blocks stages are made of — training (and its LoRA), distillation (and its teacher-targets cache),
generation, GRPO and its rewards, 4-bit quantization, GGUF export — each validated once, in its
``__post_init__``. Which kind of stage holds which block is said by the stage classes (``stages.py``). Stdlib
only."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from engine.contract.spec_fields import (SEED_HIGH, STEPS_HIGH, TOKENS_HIGH, build, check_choice, check_finite,
                                         check_fraction, check_numbers, check_positive, fail, nested, option)
from engine.contract.vocabulary import (COMPUTE_DTYPES, DIVERGENCES, GGUF_FORMATS, KD_METHODS, PRECISIONS,
                                        QUANT_TYPES, REWARDS, SCHEDULERS)
from engine.contract.errors import echo
from engine.contract.cot_template import COT_TEMPLATE

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


@dataclass
class TeacherCacheSpec:
    enabled: bool = option(False, "Token KD: run the teacher once over the data and keep its top-k log-probabilities "
                           "per response token (plus the rest of its mass as one tail bucket) in the run store; "
                           "every sweep point, epoch, resume and later run reads them instead of the teacher. "
                           "Cross-tokenizer KD always runs the teacher once; this keeps its targets in the run "
                           "store for later runs (else in the stage's work folder).")
    top_k: int = option(64, high=1 << 24, help="Teacher probabilities kept per token; the divergence is exact over "
                        "these plus the "
                        "tail bucket.")
    batch_size: int = option(8, high=1 << 16, help="Sequences the teacher reads at once while the cache is built.")
    path: str = option("", "Use this existing cache folder (refused if it was built for another teacher, data, "
                       "template, length, k or temperature); empty: the run store's cache for this key.")

    def __post_init__(self) -> None:
        check_numbers(self, "distill.teacher_cache")
        check_positive("distill.teacher_cache.top_k", self.top_k)
        check_positive("distill.teacher_cache.batch_size", self.batch_size)


@dataclass
class DistillSpec:
    method: str = option("token", "token: the paper's joint loss on teacher logits; sequence: learn from answers "
                         "the teacher generated; on_policy: GKD, the student generates and the teacher scores; "
                         "cross_tokenizer: teacher and student tokenize differently, α·CE + (1−α)·ULD (their "
                         "sorted top-k probabilities compared by rank, aligned by character offsets; the "
                         "teacher runs once, its targets kept like teacher_cache's).")
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
        check_numbers(self, "distill")
        self.teacher_cache = nested(TeacherCacheSpec, self.teacher_cache, "distill.teacher_cache")
        check_choice("distill.method", self.method, KD_METHODS)
        check_fraction("distill.alpha", self.alpha)
        check_positive("distill.temperature", self.temperature)
        check_choice("distill.divergence", self.divergence, DIVERGENCES)
        check_fraction("distill.jsd_beta", self.jsd_beta)
        check_positive("distill.top_k", self.top_k, allow_zero=True)
        check_positive("distill.chunk_size", self.chunk_size)
        check_fraction("distill.sequence_mix", self.sequence_mix)
        check_positive("distill.max_new_tokens", self.max_new_tokens)
        self._refuse_ignored_knobs()

    def _refuse_ignored_knobs(self) -> None:
        """A knob the chosen method does not read must hold its default: a spec never says something that does
        not happen (alpha weighs the token-level and cross-tokenizer joint losses only; sequence-level KD is plain
        cross-entropy on the teacher's answers, GKD has its own loss)."""
        used = KD_METHOD_KNOBS[self.method]
        for f in dataclasses.fields(self):
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            if f.name not in used and f.name != "method" and getattr(self, f.name) != default:
                users = [m for m, knobs in KD_METHOD_KNOBS.items() if f.name in knobs]
                fail(f"distill.{f.name}", f"is ignored by {KD_METHOD_WORDS[self.method]} (method: {self.method}); "
                      f"only {' and '.join(users)} KD read{'s' if len(users) == 1 else ''} it, so remove it or change "
                      "the method.")


# The distillation knobs each method reads (engine/recipes/distill.py, engine/training/kd_trainer.py,
# engine/training/cross_tokenizer.py); the others must keep their defaults. max_new_tokens: sequence and on-policy
# KD generate answers; token and cross-tokenizer KD have the teacher answer the prompts whose references a stage
# may not use (references < 1).
KD_METHOD_KNOBS: dict[str, frozenset[str]] = {
    "token": frozenset({"alpha", "temperature", "divergence", "jsd_beta", "top_k", "chunk_size", "max_new_tokens",
                        "teacher_cache"}),
    "sequence": frozenset({"sequence_mix", "max_new_tokens"}),
    "on_policy": frozenset({"temperature", "divergence", "jsd_beta", "max_new_tokens"}),
    "cross_tokenizer": frozenset({"alpha", "temperature", "chunk_size", "max_new_tokens", "teacher_cache"}),
}
KD_METHOD_WORDS = {"token": "token-level KD", "sequence": "sequence-level KD", "on_policy": "on-policy KD (GKD)",
                   "cross_tokenizer": "cross-tokenizer KD"}


@dataclass
class GenerationSpec:
    max_new_tokens: int = option(128, high=TOKENS_HIGH, help="Longest generated answer in tokens.")
    greedy: bool = option(True, "Greedy decoding (deterministic); otherwise sample with temperature and top_p.")
    temperature: float = option(0.7, high=1000.0, help="Sampling temperature (when not greedy).")
    top_p: float = option(0.9, "Nucleus sampling threshold (when not greedy).")
    batch_size: int = option(16, high=1 << 16, help="Prompts generated at once.")

    def __post_init__(self) -> None:
        check_numbers(self, "generation")
        check_positive("generation.max_new_tokens", self.max_new_tokens)
        check_positive("generation.temperature", self.temperature)
        check_fraction("generation.top_p", self.top_p, open_low=True)
        check_positive("generation.batch_size", self.batch_size)


@dataclass
class RewardSpec:
    name: str = option("answer_correct", "Reward function: " + ", ".join(REWARDS) + ".")
    weight: float = option(1.0, "Weight of this reward in the total.", high=10 ** 6)

    def __post_init__(self) -> None:
        check_numbers(self, "reward")
        check_choice("reward.name", self.name, REWARDS)
        check_finite("reward.weight", self.weight)


@dataclass
class GRPOSpec:
    num_generations: int = option(4, high=1 << 14, help="Completions sampled per prompt (the group).")
    max_completion_length: int = option(128, high=TOKENS_HIGH, help="Longest completion in tokens.")
    beta: float = option(0.0, high=10 ** 4, help="KL coefficient β against the reference model (0 = no reference "
                         "model).")
    temperature: float = option(1.0, "Sampling temperature of the completions.", high=1000.0)
    template: str = option(COT_TEMPLATE, "Prompt template; {prompt} is the task. An SFT stage with format "
                           "cot_template before this one teaches the model this template.")
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
        check_numbers(self, "grpo")
        check_positive("grpo.num_generations", self.num_generations)
        if self.num_generations < 2:
            fail("grpo.num_generations", f"must be ≥ 2 (GRPO compares completions in a group), got "
                  f"{self.num_generations}.")
        check_positive("grpo.max_completion_length", self.max_completion_length)
        check_positive("grpo.beta", self.beta, allow_zero=True)
        check_positive("grpo.temperature", self.temperature)
        if "{prompt}" not in self.template:
            fail("grpo.template", "has no {prompt} slot for the task.")
        self.rewards = [r if isinstance(r, RewardSpec) else build(RewardSpec, r, f"grpo.rewards[{i}]")
                        for i, r in enumerate(self.rewards)]
        if not self.rewards:
            fail("grpo.rewards", "is empty; name at least one reward function.")
        if (not isinstance(self.length_range, list) or len(self.length_range) != 2
                or not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n <= TOKENS_HIGH
                           for n in self.length_range)
                or not self.length_range[0] <= self.length_range[1]):
            fail("grpo.length_range", f"must be [low, high] with 0 < low ≤ high, got {echo(self.length_range)}.")
        check_positive("grpo.sample_every", self.sample_every)
        if not isinstance(self.allow_unsandboxed_code, bool):
            fail("grpo.allow_unsandboxed_code", f"must be true or false, got {echo(self.allow_unsandboxed_code)}.")


@dataclass
class QuantizeSpec:
    quant_type: str = option("nf4", "4-bit format: nf4 or fp4.")
    double_quant: bool = option(True, "Also quantize the quantization constants (saves ~0.4 bit per weight).")
    compute_dtype: str = option(COMPUTE_DTYPES[0], "Dtype the 4-bit weights are de-quantized to for matmuls: "
                                + ", ".join(COMPUTE_DTYPES) + ".")
    report: bool = option(True, "Measure size, memory, load time, latency and ROUGE-L before and after.")

    def __post_init__(self) -> None:
        check_numbers(self, "quantize")
        check_choice("quantize.quant_type", self.quant_type, QUANT_TYPES)
        check_choice("quantize.compute_dtype", self.compute_dtype, COMPUTE_DTYPES)




@dataclass
class ExportSpec:
    formats: list = option(["f16", "q8_0"], "GGUF files to write for llama.cpp / Ollama / LM Studio: f16, q8_0, "
                           "q4_0, and q4_k_m (needs llama-cpp-python, the compression-studio[gguf] extra).")
    ollama: bool = option(True, "Also write an Ollama Modelfile (FROM the smallest file, chat TEMPLATE, stop "
                          "tokens): ollama create NAME -f Modelfile.")

    def __post_init__(self) -> None:
        if not isinstance(self.formats, list) or not self.formats:
            fail("export.formats", "must be a non-empty list of GGUF formats, e.g. [f16, q4_k_m].")
        for i, fmt in enumerate(self.formats):
            check_choice(f"export.formats[{i}]", fmt, GGUF_FORMATS)
