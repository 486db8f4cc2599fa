"""What the training recipes share: data for a stage, TrainingArguments from a TrainSpec, resume and cancel
around ``trainer.train()``, and the learning-rate sweep (one model per rate, the best on validation loss kept)."""
from __future__ import annotations

import copy
import dataclasses
import gc
import json
import logging
import math
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from engine.core import heartbeat
from engine.training.callbacks import EventsCallback, drop_incomplete_checkpoints, last_checkpoint
from engine.core.context import Diverged, EngineError, RunContext, StageCancelled
from engine.core.ranks import is_main_process, wait_for_everyone
from engine.contract.metric_names import EVAL_CE, EVAL_KD_LOSS, SWEEP_EVAL_CE, SWEEP_EVAL_LOSS, SWEEP_LEARNING_RATE
from engine.contract.runs import json_safe, write_atomic
from engine.contract.spec import ModelSpec, TrainSpec

if TYPE_CHECKING:
    from engine.training.precision import PrecisionPlan

log = logging.getLogger(__name__)


def stage_splits(ctx: RunContext) -> Any:
    """The run's train/validation/test records, loaded and split once per process (stages share them)."""
    if "splits" not in ctx.cache:
        from engine.training_data.loading import load_records
        from engine.training_data.splits import split_records

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


def sft_datasets(ctx: RunContext, tokenizer: Any, train_records: list[dict] | None = None,
                 validation_records: list[dict] | None = None) -> tuple[Any, Any]:
    """Tokenized train and validation sets (loss on response tokens only); by default the stage's labelled
    training records and the run's validation split."""
    from engine.training_data.formatting import tokenize_for_sft

    data = ctx.spec.data
    train = tokenize_for_sft(tokenizer, train_records if train_records is not None else labelled_split(ctx)[0],
                             data.max_length, data.preset)
    if validation_records is None:
        validation_records = stage_splits(ctx).validation
    validation = tokenize_for_sft(tokenizer, validation_records, data.max_length, data.preset) \
        if validation_records else None
    return train, validation


def stage_precision(ctx: RunContext) -> PrecisionPlan:
    """The stage's resolved ``train.precision`` (once per stage: pure bf16 is warned about in the log)."""
    from engine.training.precision import PURE_BF16_WARNING, resolve_precision

    key = f"precision:{ctx.stage.name}"
    if key not in ctx.cache:
        plan = resolve_precision(ctx.stage.train.precision, ctx.device, f"{ctx.stage.name}.train.precision")
        if plan.pure_bf16:
            log.warning(PURE_BF16_WARNING)
            ctx.events.log(f"{ctx.stage.name}: {PURE_BF16_WARNING}", level="warning")
        else:
            ctx.events.log(f"{ctx.stage.name}: training precision {plan.name}")
        ctx.cache[key] = plan
    return ctx.cache[key]


def quantized_base(ctx: RunContext, model_spec: ModelSpec) -> bool:
    """QLoRA: the stage trains adapters on a 4-bit base (the model spec's load_in_4bit, train.lora's
    quantized_base, or GRPO's own quantized_base)."""
    stage = ctx.stage
    return bool(model_spec.load_in_4bit or stage.train.lora.quantized_base
                or (stage.kind == "grpo" and stage.grpo.quantized_base))


def load_trainable(ctx: RunContext, model_spec: ModelSpec) -> Any:
    """The model a stage trains: all weights in the precision's master dtype, LoRA adapters on them, or QLoRA
    (adapters on a 4-bit base, whatever ``lora.enabled`` says)."""
    from engine.models.loading import apply_lora, load_model

    train, quantized = ctx.stage.train, quantized_base(ctx, model_spec)
    spec = dataclasses.replace(model_spec, load_in_4bit=quantized)
    model = load_model(spec, ctx.device, trainable=True, precision=stage_precision(ctx))
    if quantized and ctx.device == "cpu":
        # bitsandbytes repacks 4-bit weights for its AVX512 CPU kernel the first time it runs without grad (e.g.
        # a generation); the repacking needs widths divisible by its block size (not the demo's 96) and switches
        # the weight format between generation and training. The plain de-quantizing path works everywhere.
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    if train.lora.enabled or quantized:
        model = apply_lora(model, train.lora)
    return model


def merged_for_saving(ctx: RunContext, model: Any, model_spec: ModelSpec) -> Any:
    """A plain transformers model: LoRA adapters merged into their base. QLoRA adapters are merged into a
    full-precision copy of the base (merging into the 4-bit weights would round them again and leave a
    4-bit folder that the next stage cannot train), so every stage saves a folder plain transformers loads."""
    from peft import PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    from engine.models.loading import load_model

    if not isinstance(model, PeftModel):
        return model
    if not getattr(model, "is_loaded_in_4bit", False):
        return model.merge_and_unload()
    ctx.events.log(f"{ctx.stage.name}: merging the QLoRA adapters into a full-precision copy of the base")
    adapters = {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(model).items()}
    config = copy.deepcopy(model.peft_config[model.active_adapter])
    base = load_model(dataclasses.replace(model_spec, load_in_4bit=False), ctx.device, trainable=True,
                      precision=stage_precision(ctx))
    merged = get_peft_model(base, config)
    set_peft_model_state_dict(merged, adapters)
    merged = merged.merge_and_unload()
    merged.eval()
    merged.requires_grad_(False)
    return merged


def training_arguments(ctx: RunContext, train: TrainSpec, learning_rate: float, output_dir: Path,
                       config_class: type | None = None, **overrides: Any) -> Any:
    """TrainingArguments (or a TRL config subclassing it) for a stage: checkpoints in the run folder, metrics
    through our callback plus the trackers the spec's ``report_to`` names, no tqdm on stdout, autocast as
    ``train.precision`` says."""
    from transformers import TrainingArguments

    on_cpu = ctx.device == "cpu"
    flags = stage_precision(ctx).trainer_flags
    # TensorBoard files come from the event stream (engine/runner/tensorboard_log.py); the Trainer adds the others
    report_to = [name for name in ctx.spec.report_to if name != "tensorboard"] or "none"
    kwargs = dict(
        output_dir=str(output_dir), learning_rate=learning_rate, num_train_epochs=train.epochs,
        max_steps=train.max_steps if train.max_steps > 0 else -1,
        per_device_train_batch_size=train.batch_size, per_device_eval_batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation, warmup_steps=0,
        weight_decay=train.weight_decay, lr_scheduler_type=train.scheduler, logging_steps=train.logging_steps,
        save_steps=train.save_steps, save_total_limit=2, save_strategy="steps", eval_strategy="no",
        gradient_checkpointing=train.gradient_checkpointing, seed=train.seed, data_seed=train.seed,
        report_to=report_to, run_name=f"{ctx.spec.name}-{ctx.stage.name}", use_cpu=on_cpu, bf16=flags["bf16"],
        fp16=flags["fp16"], remove_unused_columns=False,
        disable_tqdm=True, include_num_input_tokens_seen=True, dataloader_num_workers=0,
        save_only_model=False, logging_first_step=True,
        logging_nan_inf_filter=False,  # a NaN loss must reach our callback (finite or failed), not be averaged away
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
    if is_main_process():
        for name in drop_incomplete_checkpoints(checkpoint_dir):
            ctx.events.log(f"{ctx.stage.name}: dropped {name}, a checkpoint whose save never finished", "warning")
    wait_for_everyone()
    resume = last_checkpoint(checkpoint_dir)
    if resume:
        ctx.events.log(f"resuming {ctx.stage.name} from {Path(resume).name}")
    trainer.train(resume_from_checkpoint=resume)
    if callback.cancelled:
        ctx.events.emit("artifact", stage=ctx.stage.name, kind="checkpoint",
                        path=str(last_checkpoint(checkpoint_dir) or checkpoint_dir))
        raise StageCancelled(ctx.stage.name)
    return trainer


def validation_scores(trainer: Any) -> dict[str, float]:
    """The stage's validation numbers: ``eval/ce`` (plain cross-entropy on response tokens, comparable between
    every stage and model), ``eval/kd_loss`` beside it for token KD, and ``loss`` (the objective the stage
    minimises, which a sweep ranks by). The evaluation's own metric event goes out through EventsCallback."""
    if trainer.eval_dataset is None:
        raise EngineError("a learning-rate sweep needs a validation split; set data.validation_fraction > 0.")
    metrics = trainer.evaluate()
    if "eval_kd/ce" in metrics:  # KDTrainer: eval_loss is the joint loss, its CE part is logged beside it
        return {EVAL_CE: float(metrics["eval_kd/ce"]), EVAL_KD_LOSS: float(metrics["eval_loss"]),
                "loss": float(metrics["eval_loss"])}
    return {EVAL_CE: float(metrics["eval_loss"]), "loss": float(metrics["eval_loss"])}


def train_with_sweep(ctx: RunContext, train: TrainSpec,
                     fit: Callable[[float, Path], tuple[Any, Any]]) -> tuple[Any, dict]:
    """Run ``fit(lr, checkpoint_dir) -> (trainer, model)`` once, or once per swept learning rate keeping the
    model with the lowest validation loss (the stage's objective). Returns the model and a summary (eval/ce,
    eval/kd_loss for KD, the sweep table if any)."""
    rates = train.sweep_learning_rates or [train.learning_rate]
    if len(rates) == 1:
        trainer, model = fit(rates[0], ctx.checkpoint_dir)
        summary = {}
        if trainer.eval_dataset is not None:
            summary = {k: v for k, v in validation_scores(trainer).items() if k != "loss"}
        return model, summary
    try:
        return _sweep(ctx, rates, fit)
    finally:
        ctx.sweep = None  # the stage's later events (and the next stage's) belong to no sweep point


def _sweep(ctx: RunContext, rates: list[float], fit: Callable[[float, Path], tuple[Any, Any]]) -> tuple[Any, dict]:
    results, best = [], None
    for i, lr in enumerate(rates):
        ctx.events.log(f"sweep {i + 1}/{len(rates)}: learning rate {lr:g}")
        ctx.sweep = {"index": i, "count": len(rates), "learning_rate": lr}  # tags this rate's metrics and progress
        heartbeat.phase(f"sweep {i + 1}/{len(rates)} (learning rate {lr:g}): loading the model")
        try:
            trainer, model = fit(lr, ctx.checkpoint_dir / f"lr-{lr:g}")
        except Diverged as exc:  # one rate of a sweep diverging is a result, not a failed stage
            ctx.events.log(f"sweep: learning rate {lr:g} diverged ({exc})", "warning")
            results.append({"learning_rate": lr, "eval_loss": None, "diverged": True})
            gc.collect()
            continue
        heartbeat.phase(f"sweep {i + 1}/{len(rates)} (learning rate {lr:g}): validation")
        scores = validation_scores(trainer)
        loss = scores.pop("loss")
        results.append({"learning_rate": lr, "eval_loss": loss, **{k.replace("/", "_"): v for k, v in scores.items()}})
        ctx.events.metric(ctx.stage.name, i, {SWEEP_EVAL_LOSS: loss, SWEEP_EVAL_CE: scores[EVAL_CE],
                                              SWEEP_LEARNING_RATE: lr})
        if best is None or loss < best[0] or math.isnan(best[0]):
            best = (loss, lr, model, scores)
        else:
            del model
        del trainer
        heartbeat.phase(f"sweep {i + 1}/{len(rates)}: releasing the model")
        gc.collect()
    if best is None:
        raise Diverged(f"{ctx.stage.name}: every learning rate of the sweep diverged "
                       f"({', '.join(f'{r:g}' for r in rates)}); try smaller ones.")
    loss, lr, model, scores = best
    ctx.events.log(f"sweep: best learning rate {lr:g} (validation loss {loss:.4f}, cross-entropy "
                   f"{scores[EVAL_CE]:.4f})")
    write_atomic(ctx.work_dir / "sweep.json", json.dumps(json_safe({"results": results, "best": lr}), indent=2))
    return model, {"sweep": results, "best_learning_rate": lr, **scores, **point_scores(results)}


def point_scores(results: list[dict]) -> dict[str, float]:
    """Every sweep point's own validation scores as flat scores, named like its TensorBoard run
    (``lr-<rate>/eval_loss``, ``lr-<rate>/eval_ce``): the stage's scores (run.json, ``runs show``, the card) hold
    each point, not only the best model's. A diverged point has none."""
    out = {}
    for point in results:
        for key in ("eval_loss", "eval_ce"):
            if isinstance(point.get(key), float):
                out[f"lr-{point['learning_rate']:g}/{key}"] = point[key]
    return out


def finish_checkpoints(checkpoint_dir: Path) -> None:
    """A finished stage's checkpoints are only resume points: drop them once the final model is saved."""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
