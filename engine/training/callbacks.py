"""The bridge from transformers/TRL trainers to the event stream: metrics renamed by prefix, progress with ETA,
tokens per second, cancellation that saves a checkpoint before it stops, and "finite or failed": a non-finite
loss stops the stage, and only checkpoints whose weights are finite and whose save finished are marked
complete (a ``complete`` file written last), which is all a resume will start from."""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

from engine.core import heartbeat
from engine.core.context import Diverged, RunContext
from engine.contract.metric_names import PERF_TOKENS_PER_S, rename_metrics
from engine.contract.run_status import CHECKPOINT as _CHECKPOINT
from engine.contract.run_status import COMPLETE_MARKER, checkpoints, complete_checkpoints, is_complete
from engine.contract.runs import write_atomic
from engine.core.ranks import any_rank, is_main_process


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
        self._micro = 1  # the micro-batch of the current optimizer step (gradient accumulation)
        self._predicted = 0  # batches of the current validation pass

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.monotonic()
        self._last_tokens = (getattr(state, "num_input_tokens_seen", 0) or 0, self._start)
        self.ctx.events.status("running", self.ctx.stage.name, f"training for {state.max_steps} steps")

    # Phases name what runs for the heartbeat (engine/core/heartbeat.py), which speaks only when a step, a save
    # or an evaluation is slow enough to leave the stream silent: progress inside a step costs nothing otherwise.
    def on_step_begin(self, args, state, control, **kwargs):
        self._micro = 1
        heartbeat.phase(self._step_text(args, state))

    def on_substep_end(self, args, state, control, **kwargs):
        self._micro += 1  # one micro-batch of the gradient accumulation is done
        heartbeat.phase(self._step_text(args, state))

    def on_prediction_step(self, args, state, control, **kwargs):
        self._predicted += 1
        heartbeat.phase(f"validation after step {state.global_step}: batch {self._predicted}")

    def on_evaluate(self, args, state, control, **kwargs):
        self._predicted = 0

    def on_train_end(self, args, state, control, **kwargs):
        heartbeat.phase(f"{self.ctx.stage.name}: training finished at step {state.global_step}")

    def _step_text(self, args, state) -> str:
        text = f"training step {state.global_step + 1}/{state.max_steps}"
        accumulation = args.gradient_accumulation_steps
        return text + (f", micro-batch {self._micro}/{accumulation}" if accumulation > 1 else "")

    def on_step_end(self, args, state, control, **kwargs):
        # what the trainer does next, between this step and the next one (its log/save/evaluate)
        heartbeat.phase(f"saving checkpoint-{state.global_step}" if control.should_save else
                        f"evaluating after step {state.global_step}" if control.should_evaluate else
                        f"after training step {state.global_step}/{state.max_steps}")
        now = time.monotonic()
        if now - self._last_progress >= self.progress_interval_s or state.global_step >= state.max_steps:
            self._last_progress = now
            self.ctx.events.progress(self.ctx.stage.name, state.global_step, state.max_steps, now - self._start,
                                     sweep=self.ctx.sweep)
        # any_rank: under several processes every rank must stop at the same step (engine/runner/launch.py)
        if any_rank(self.ctx.cancel.is_set()) and not self.cancelled:
            self.cancelled = True
            control.should_save = True  # the checkpoint a resume starts from
            control.should_training_stop = True
            self.ctx.events.status("cancelling", self.ctx.stage.name, "saving a checkpoint before stopping")
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if isinstance(loss, (int, float)) and not math.isfinite(loss):
            raise Diverged(f"{self.ctx.stage.name} diverged at step {state.global_step}: the training loss is "
                           f"{loss}; lower train.learning_rate (now {args.learning_rate:g}) and start the run "
                           "again (its last good checkpoint is kept).")
        values = rename_metrics(logs or {})
        tokens = getattr(state, "num_input_tokens_seen", 0) or 0
        now = time.monotonic()
        seen, since = self._last_tokens
        if tokens > seen and now > since:
            values[PERF_TOKENS_PER_S] = (tokens - seen) / (now - since)
            self._last_tokens = (tokens, now)
        if values:
            self.history.append({"step": state.global_step, **values})
            self.ctx.events.metric(self.ctx.stage.name, state.global_step, values, sweep=self.ctx.sweep)


    def on_save(self, args, state, control, model=None, **kwargs):
        """The trainer finished writing checkpoint-N: refuse it if its weights are not finite, else mark it
        complete (the marker is written last, so a crash mid-save leaves an unmarked, ignored folder)."""
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        heartbeat.phase(f"checking checkpoint-{state.global_step}")
        bad = nonfinite_parameter(model) if model is not None else None
        if bad is not None:
            if is_main_process():
                shutil.rmtree(folder, ignore_errors=True)
            raise Diverged(f"{self.ctx.stage.name} diverged by step {state.global_step}: weight {bad} is not "
                           f"finite; lower train.learning_rate (now {args.learning_rate:g}) and start the run "
                           "again (its last good checkpoint is kept).")
        if is_main_process() and folder.is_dir():
            write_atomic(folder / COMPLETE_MARKER, f"{state.global_step}\n")


def nonfinite_parameter(model) -> str | None:
    """The name of the first floating-point parameter holding a NaN or an infinity, or None."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.is_floating_point() and param.device.type != "meta" and not torch.isfinite(param).all():
                return name
    return None


def last_checkpoint(folder) -> str | None:
    """The newest complete ``checkpoint-N`` folder under ``folder`` (what a resumed stage continues from; the
    layout is the contract's, engine/contract/run_status.py, which the studio's Resume button reads too)."""
    complete = complete_checkpoints(folder)
    return str(complete[-1]) if complete else None


def drop_incomplete_checkpoints(folder) -> list[str]:
    """Remove checkpoint folders a crash left half-written (newer than the last complete one), so the trainer
    neither resumes from nor rotates against them. Returns their names."""
    found = checkpoints(folder)
    marked = any((p / COMPLETE_MARKER).is_file() for p in found)
    last = last_checkpoint(folder)
    newest_good = int(_CHECKPOINT.fullmatch(Path(last).name)[1]) if last else -1
    dropped = [p for p in found if not is_complete(p, marked) and int(_CHECKPOINT.fullmatch(p.name)[1]) > newest_good]
    for p in dropped:
        shutil.rmtree(p, ignore_errors=True)
    return [p.name for p in dropped]
