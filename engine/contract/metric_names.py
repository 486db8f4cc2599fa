"""Metric names: the constants the engine emits and the rules by which the studio groups and draws them.

Names are grouped by prefix (``train/``, ``kd/``, ``grpo/``, ``eval/``, ``perf/``, ``sweep/``, ``quant/``). The
engine emits the constants below (or renames trainer logs to them with :func:`rename_metrics`); the studio plots
each name in :func:`metric_group`'s plot and smooths only :data:`NOISY_GROUPS`. TensorBoard tags are the same
names. A new metric: a constant here, emitted by its recipe; its plot follows from its prefix. Stdlib only.
"""
from __future__ import annotations

import re

TRAIN_LOSS = "train/loss"  # the stage's training objective (SFT: cross-entropy; token KD: the joint loss)
TRAIN_LR = "train/lr"  # the learning rate (a schedule: never smoothed)
TRAIN_GRAD_NORM = "train/grad_norm"  # the gradient norm before clipping
KD_CE = "kd/ce"  # token KD: cross-entropy on the reference answers (per response token)
KD_DIVERGENCE = "kd/divergence"  # token KD: D(teacher ‖ student) per response token, before the (1−α)·T² weight
GRPO_REWARD = "grpo/reward"  # GRPO: the weighted total reward
GRPO_REWARD_STD = "grpo/reward_std"  # GRPO: the reward's spread within a group
GRPO_KL = "grpo/kl"  # GRPO: KL divergence from the reference model (logged by TRL when β > 0)
GRPO_COMPLETION_LENGTH = "grpo/completion_length"  # GRPO: mean completion length in tokens
GRPO_ENTROPY = "grpo/entropy"  # GRPO: mean token entropy of the completions
EVAL_CE = "eval/ce"  # validation cross-entropy on response tokens (comparable between every stage and model)
EVAL_KD_LOSS = "eval/kd_loss"  # token KD: the joint loss on the validation split
EVAL_KD_DIVERGENCE = "eval/kd_divergence"  # token KD: the divergence on the validation split
EVAL_ROUGE_L = "eval/rougeL"  # ROUGE-L F1 on the held-out split
EVAL_EXACT_MATCH = "eval/exact_match"  # exact match on the held-out split
EVAL_RETENTION = "eval/retention"  # a model's ROUGE-L ÷ the reference model's (the paper's retention)
EVAL_PARAMETERS = "eval/parameters"  # a model's parameter count, sent as soon as the evaluation loads it
EVAL_WEIGHT_BYTES = "eval/weight_bytes"  # the bytes its weights occupy in memory, sent at the same moment
# a smaller model as the reference model's draft (speculative decoding, engine/evaluation/drafting.py): the share
# of its draft tokens the reference keeps, and greedy tokens/s with the draft ÷ without it
EVAL_DRAFT_ACCEPTANCE = "eval/draft_acceptance"
EVAL_DRAFT_SPEEDUP = "eval/draft_speedup"
PERF_TOKENS_PER_S = "perf/tokens_per_s"  # training throughput
# a learning-rate sweep, one point per rate: its validation objective (which picks the rate), its validation
# cross-entropy, and the rate itself
SWEEP_EVAL_LOSS = "sweep/eval_loss"
SWEEP_EVAL_CE = "sweep/eval_ce"
SWEEP_LEARNING_RATE = "sweep/learning_rate"


def grpo_reward(function: str) -> str:
    """One reward function's mean reward: ``grpo/reward/<function>``."""
    return f"{GRPO_REWARD}/{function}"


def grpo_held_out(score: str, when: str) -> str:
    """GRPO's held-out score before or after training: ``grpo/<score>_<when>`` (correct_before, rougeL_after…)."""
    return f"grpo/{score}_{when}"


# Trainer/TRL log keys → the protocol's metric names.
TRAINER_RENAMES = {
    "loss": TRAIN_LOSS, "learning_rate": TRAIN_LR, "grad_norm": TRAIN_GRAD_NORM,
    "reward": GRPO_REWARD, "reward_std": GRPO_REWARD_STD, "kl": GRPO_KL,
    "completions/mean_length": GRPO_COMPLETION_LENGTH, "completion_length": GRPO_COMPLETION_LENGTH,
    "entropy": GRPO_ENTROPY,
}
_REWARD_KEY = re.compile(r"^rewards/(?P<name>[^/]+)/mean$")
_SKIP = {"epoch", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second",
         "train_loss", "num_tokens", "step"}


def rename_metrics(logs: dict) -> dict:
    """Protocol names for one trainer log; unknown keys with a '/' pass through, other noise is dropped.

    Validation: ``eval/ce`` is always the plain cross-entropy on response tokens (SFT's eval_loss, KDTrainer's
    eval_kd/ce), so SFT and KD curves compare; KD's joint loss is ``eval/kd_loss``, its divergence
    ``eval/kd_divergence``."""
    logs = dict(logs)
    if "eval_kd/ce" in logs:
        logs["eval_kd_loss"] = logs.pop("eval_loss", None)
        logs["eval_ce"] = logs.pop("eval_kd/ce")
        if "eval_kd/divergence" in logs:
            logs["eval_kd_divergence"] = logs.pop("eval_kd/divergence")
    elif "eval_loss" in logs:
        logs["eval_ce"] = logs.pop("eval_loss")
    out = {}
    for key, value in logs.items():
        if not isinstance(value, (int, float)) or key in _SKIP:
            continue
        match = _REWARD_KEY.match(key)
        if key in TRAINER_RENAMES:
            out[TRAINER_RENAMES[key]] = float(value)
        elif match:
            out[grpo_reward(match["name"])] = float(value)
        elif key.startswith("eval_"):
            out["eval/" + key[5:]] = float(value)
        elif "/" in key and not key.startswith(("rewards/", "completions/", "sampling/", "clip_ratio")):
            out[key] = float(value)
    return out


# Plot groups in display order: (key, title, metric-name predicate). The first match wins.
METRIC_GROUPS: tuple[tuple[str, str], ...] = (
    ("loss", "Loss · CE · divergence"),
    ("reward", "Rewards"),
    ("kl", "KL"),
    ("lr", "Learning rate"),
    ("length", "Completion length (tokens)"),
    ("throughput", "Tokens / s"),
    ("grad", "Gradient norm"),
    ("eval", "Evaluation"),
    ("sweep", "Learning-rate sweep (validation)"),
    ("other", "Other"),
)


def metric_group(name: str) -> str:
    """The plot a metric belongs to, from its name's prefix (train/loss, kd/ce, grpo/reward/format, ...)."""
    leaf = name.rsplit("/", 1)[-1]
    if name.startswith("sweep/"):
        return "sweep"  # one point per learning rate (x: the rate), after a sweep's trainings
    if "loss" in leaf or leaf in ("ce", "divergence", "kd_divergence"):
        return "loss"  # eval/ce and eval/kd_loss (validation) belong next to the training loss
    if name.startswith(("eval/", "quant/")) or name.endswith(("_before", "_after")):
        return "eval"  # held-out scores: GRPO's grpo/correct_before/_after, the 4-bit report's quant/* ratios
    if name.endswith("completion_length"):
        return "length"  # GRPO's mean completion length: a collapse (the paper's 17 tokens) shows here
    if name.startswith("grpo/reward"):
        return "reward"
    if name.startswith("grpo/kl") or leaf == "kl":
        return "kl"
    if name.endswith("/lr") or "learning_rate" in leaf:
        return "lr"
    if "tokens_per_s" in leaf or name.startswith("perf/"):
        return "throughput"
    if leaf == "grad_norm":
        return "grad"  # its own titled plot (it was "Other")
    if name.startswith("kd/") or "loss" in leaf or leaf in ("ce", "divergence"):
        return "loss"
    return "other"


NOISY_GROUPS = ("loss", "reward", "kl", "length")  # per-step values that scatter: smoothing helps reading them

