"""Metric names: the one table of what the engine emits and how the studio groups and draws it.

Names are grouped by prefix (``train/loss``, ``train/lr``, ``kd/ce``, ``kd/divergence``, ``grpo/reward``,
``grpo/reward/<function>``, ``grpo/kl``, ``grpo/completion_length``, ``eval/ce``, ``eval/kd_loss``,
``eval/rougeL``, ``eval/retention``, ``perf/tokens_per_s``). The engine renames trainer logs with
:func:`rename_metrics`; the studio plots each name in :func:`metric_group`'s plot and smooths only
:data:`NOISY_GROUPS`. TensorBoard tags are the same names. Stdlib only.
"""
from __future__ import annotations

import re

# What each well-known metric means (the README and tooltips read it; names not listed pass through as they are).
METRICS: dict[str, str] = {
    "train/loss": "the training loss of the stage (SFT: cross-entropy; KD: the joint loss)",
    "train/lr": "the learning rate (a schedule: never smoothed)",
    "train/grad_norm": "the gradient norm before clipping",
    "kd/ce": "KD: cross-entropy on the reference answer",
    "kd/divergence": "KD: the divergence between teacher and student (scaled by T²)",
    "grpo/reward": "GRPO: the weighted total reward",
    "grpo/reward_std": "GRPO: the reward's spread within a group",
    "grpo/kl": "GRPO: KL divergence from the reference model",
    "grpo/completion_length": "GRPO: mean completion length in tokens",
    "grpo/entropy": "GRPO: mean token entropy of the completions",
    "eval/ce": "validation cross-entropy on response tokens (comparable between SFT and KD)",
    "eval/kd_loss": "KD: the joint loss on the validation split",
    "eval/kd_divergence": "KD: the divergence on the validation split",
    "eval/rougeL": "ROUGE-L F1 on the held-out split",
    "eval/retention": "a student's score ÷ its teacher's",
    "perf/tokens_per_s": "training throughput",
    "sweep/eval_loss": "a learning-rate sweep: each rate's validation loss (the stage's objective, which picks the rate)",
    "sweep/eval_ce": "a learning-rate sweep: each rate's validation cross-entropy",
}

# Trainer/TRL log keys → the protocol's metric names (DESIGN.md: grouped by prefix).
TRAINER_RENAMES = {
    "loss": "train/loss", "learning_rate": "train/lr", "grad_norm": "train/grad_norm",
    "reward": "grpo/reward", "reward_std": "grpo/reward_std", "kl": "grpo/kl",
    "completions/mean_length": "grpo/completion_length", "completion_length": "grpo/completion_length",
    "entropy": "grpo/entropy",
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
            out[f"grpo/reward/{match['name']}"] = float(value)
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


def is_noisy(name: str) -> bool:
    """Smooth noisy training series only: never a schedule (the learning rate), never an evaluation point."""
    return metric_group(name) in NOISY_GROUPS and not name.startswith("eval/")
