"""The bridge from transformers/TRL trainers to the event stream: metrics renamed by prefix, progress with ETA,
tokens per second, and cancellation that saves a checkpoint before it stops."""
from __future__ import annotations

import re
import time

from transformers import TrainerCallback

from engine.context import RunContext
from engine.launch import any_rank

# Trainer/TRL log keys → the protocol's metric names (DESIGN.md: grouped by prefix).
_RENAMES = {
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
        if key in _RENAMES:
            out[_RENAMES[key]] = float(value)
        elif match:
            out[f"grpo/reward/{match['name']}"] = float(value)
        elif key.startswith("eval_"):
            out["eval/" + key[5:]] = float(value)
        elif "/" in key and not key.startswith(("rewards/", "completions/", "sampling/", "clip_ratio")):
            out[key] = float(value)
    return out


class EventsCallback(TrainerCallback):
    """Emits metric and progress events for the stage in ``ctx`` and stops (after a checkpoint) on cancel."""

    def __init__(self, ctx: RunContext, *, progress_interval_s: float = 0.5) -> None:
        self.ctx = ctx
        self.progress_interval_s = progress_interval_s
        self.cancelled = False
        self._start = time.monotonic()
        self._last_progress = 0.0
        self._last_tokens = (0, time.monotonic())
        self.history: list[dict] = []  # every metric event's values, for the recipe's summary

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.monotonic()
        self._last_tokens = (getattr(state, "num_input_tokens_seen", 0) or 0, self._start)
        self.ctx.events.status("running", self.ctx.stage.name, f"training for {state.max_steps} steps")

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        if now - self._last_progress >= self.progress_interval_s or state.global_step >= state.max_steps:
            self._last_progress = now
            self.ctx.events.progress(self.ctx.stage.name, state.global_step, state.max_steps, now - self._start)
        # any_rank: under several processes every rank must stop at the same step (engine/launch.py)
        if any_rank(self.ctx.cancel.is_set()) and not self.cancelled:
            self.cancelled = True
            control.should_save = True  # the checkpoint a resume starts from
            control.should_training_stop = True
            self.ctx.events.status("cancelling", self.ctx.stage.name, "saving a checkpoint before stopping")
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        values = rename_metrics(logs or {})
        tokens = getattr(state, "num_input_tokens_seen", 0) or 0
        now = time.monotonic()
        seen, since = self._last_tokens
        if tokens > seen and now > since:
            values["perf/tokens_per_s"] = (tokens - seen) / (now - since)
            self._last_tokens = (tokens, now)
        if values:
            self.history.append({"step": state.global_step, **values})
            self.ctx.events.metric(self.ctx.stage.name, state.global_step, values)


def last_checkpoint(folder) -> str | None:
    """The newest ``checkpoint-N`` folder under ``folder`` (what a resumed stage continues from)."""
    from transformers.trainer_utils import get_last_checkpoint

    try:
        return get_last_checkpoint(str(folder))
    except (FileNotFoundError, OSError):
        return None
