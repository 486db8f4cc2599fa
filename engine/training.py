"""What the training recipes share: data for a stage, TrainingArguments from a TrainSpec, resume and cancel
around ``trainer.train()``, and the learning-rate sweep (one model per rate, the best on validation loss kept)."""
from __future__ import annotations

import gc
import json
import logging
import math
import random
import shutil
from pathlib import Path
from typing import Any, Callable

from engine.callbacks import EventsCallback, last_checkpoint
from engine.context import EngineError, RunContext, StageCancelled
from engine.spec import TrainSpec

log = logging.getLogger(__name__)


def stage_splits(ctx: RunContext) -> Any:
    """The run's train/validation/test records, loaded and split once per process (stages share them)."""
    if "splits" not in ctx.cache:
        from engine.data import load_records, split_records

        ctx.cache["splits"] = split_records(load_records(ctx.spec.data), ctx.spec.data)
    return ctx.cache["splits"]


def labelled_split(ctx: RunContext) -> tuple[list[dict], list[dict]]:
    """The training records whose references this stage may use, and the rest (prompts only). The choice is
    seeded by the data seed, so every stage with the same ``references`` fraction sees the same records."""
    records = stage_splits(ctx).train
    fraction = ctx.stage.references
    if fraction >= 1:
        return records, []
    rank = random.Random(ctx.spec.data.seed).sample(range(len(records)), len(records))
    keep = set(rank[:max(1, round(fraction * len(records)))])
    labelled = [r for i, r in enumerate(records) if i in keep]
    return labelled, [r for i, r in enumerate(records) if i not in keep]


def sft_datasets(ctx: RunContext, tokenizer: Any, train_records: list[dict] | None = None) -> tuple[Any, Any]:
    """Tokenized train and validation sets (loss on response tokens only); by default the stage's labelled
    training records."""
    from engine.data import tokenize_for_sft

    splits = stage_splits(ctx)
    data = ctx.spec.data
    train = tokenize_for_sft(tokenizer, train_records if train_records is not None else labelled_split(ctx)[0],
                             data.max_length, data.preset)
    validation = tokenize_for_sft(tokenizer, splits.validation, data.max_length, data.preset) \
        if splits.validation else None
    return train, validation


def training_arguments(ctx: RunContext, train: TrainSpec, learning_rate: float, output_dir: Path,
                       config_class: type | None = None, **overrides: Any) -> Any:
    """TrainingArguments (or a TRL config subclassing it) for a stage: checkpoints in the run folder, metrics
    only through our callback (no external reporting, no tqdm on stdout)."""
    from transformers import TrainingArguments

    on_cpu = ctx.device == "cpu"
    kwargs = dict(
        output_dir=str(output_dir), learning_rate=learning_rate, num_train_epochs=train.epochs,
        max_steps=train.max_steps if train.max_steps > 0 else -1,
        per_device_train_batch_size=train.batch_size, per_device_eval_batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation, warmup_steps=0,
        weight_decay=train.weight_decay, lr_scheduler_type=train.scheduler, logging_steps=train.logging_steps,
        save_steps=train.save_steps, save_total_limit=2, save_strategy="steps", eval_strategy="no",
        gradient_checkpointing=train.gradient_checkpointing, seed=train.seed, data_seed=train.seed,
        report_to="none", use_cpu=on_cpu, bf16=False, fp16=False, remove_unused_columns=False,
        disable_tqdm=True, include_num_input_tokens_seen=True, dataloader_num_workers=0,
        save_only_model=False, logging_first_step=True,
    )
    kwargs.update(overrides)
    args = (config_class or TrainingArguments)(**kwargs)
    args.warmup_ratio = train.warmup_ratio  # honoured by the scheduler; set after init to skip its deprecation note
    return args


def run_trainer(ctx: RunContext, trainer: Any, callback: EventsCallback, checkpoint_dir: Path) -> Any:
    """Train, resuming from the stage's last checkpoint if a previous attempt left one; raise StageCancelled
    (after the checkpoint is written) when the user cancelled."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints log dicts; our EventsCallback already reports them
    resume = last_checkpoint(checkpoint_dir)
    if resume:
        ctx.events.log(f"resuming {ctx.stage.name} from {Path(resume).name}")
    trainer.train(resume_from_checkpoint=resume)
    if callback.cancelled:
        ctx.events.emit("artifact", stage=ctx.stage.name, kind="checkpoint",
                        path=str(last_checkpoint(checkpoint_dir) or checkpoint_dir))
        raise StageCancelled(ctx.stage.name)
    return trainer


def validation_loss(trainer: Any) -> float:
    if trainer.eval_dataset is None:
        raise EngineError("a learning-rate sweep needs a validation split; set data.validation_fraction > 0.")
    return float(trainer.evaluate()["eval_loss"])


def train_with_sweep(ctx: RunContext, train: TrainSpec,
                     fit: Callable[[float, Path], tuple[Any, Any]]) -> tuple[Any, dict]:
    """Run ``fit(lr, checkpoint_dir) -> (trainer, model)`` once, or once per swept learning rate keeping the
    model with the lowest validation loss. Returns the model and a summary (the sweep table, if any)."""
    rates = train.sweep_learning_rates or [train.learning_rate]
    if len(rates) == 1:
        trainer, model = fit(rates[0], ctx.checkpoint_dir)
        summary = {}
        if trainer.eval_dataset is not None:
            loss = validation_loss(trainer)
            ctx.events.metric(ctx.stage.name, trainer.state.global_step, {"eval/loss": loss})
            summary["eval/loss"] = loss
        return model, summary
    results, best = [], None
    for i, lr in enumerate(rates):
        ctx.events.log(f"sweep {i + 1}/{len(rates)}: learning rate {lr:g}")
        trainer, model = fit(lr, ctx.checkpoint_dir / f"lr-{lr:g}")
        loss = validation_loss(trainer)
        results.append({"learning_rate": lr, "eval_loss": loss})
        ctx.events.metric(ctx.stage.name, i, {"sweep/eval_loss": loss, "sweep/learning_rate": lr})
        if best is None or loss < best[0] or math.isnan(best[0]):
            best = (loss, lr, model)
        else:
            del model
        del trainer
        gc.collect()
    loss, lr, model = best
    ctx.events.log(f"sweep: best learning rate {lr:g} (validation loss {loss:.4f})")
    (ctx.work_dir / "sweep.json").write_text(json.dumps({"results": results, "best": lr}, indent=2), encoding="utf-8")
    return model, {"sweep": results, "best_learning_rate": lr, "eval/loss": loss}


def finish_checkpoints(checkpoint_dir: Path) -> None:
    """A finished stage's checkpoints are only resume points: drop them once the final model is saved."""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
