"""The settings of what each stage kind does — distillation (and its teacher-targets cache), generation, GRPO and
its rewards, 4-bit quantization, GGUF export — each validated once, in its ``__post_init__``. Stdlib only."""
from __future__ import annotations

from dataclasses import dataclass

from engine.contract.spec_fields import (STEPS_HIGH, TOKENS_HIGH, build, check_choice, check_finite, check_fraction,
                                         check_numbers, check_positive, fail, nested, option)
from engine.contract.vocabulary import COMPUTE_DTYPES, DIVERGENCES, GGUF_FORMATS, KD_METHODS, QUANT_TYPES, REWARDS
from engine.contract.errors import echo

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
