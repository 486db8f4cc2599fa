"""What several stage recipes share: supervised fine-tuning on records (SFT, and sequence-level KD on the
teacher's answers), saving a stage's model with its card, dropping its resume checkpoints and
announcing it. Recipes import this module, never each other (an import-linter contract holds them to it)."""
from __future__ import annotations

from typing import Any

from engine.training.callbacks import EventsCallback, nonfinite_parameter
from engine.models.cards import STAGE_TAGS, adapter_note, dataset_ids
from engine.core.context import Diverged, RunContext, StageResult
from engine.contract.spec import ModelSpec, to_dict
from engine.training_data.collate import pad_collator
from engine.training.kd_trainer import ChunkedSFTTrainer
from engine.models.loading import model_card, save_model
from engine.training.support import (finish_checkpoints, load_trainable, merged_for_saving, quantized_base,
                                     run_trainer, sft_datasets, train_with_sweep, training_arguments)


def train_sft(ctx: RunContext, model_spec: ModelSpec, tokenizer: Any,
              train_records: list[dict] | None = None,
              validation_records: list[dict] | None = None) -> tuple[Any, dict]:
    """Fine-tune ``model_spec`` on the run's training split (or on ``train_records``, validated on
    ``validation_records``); sweeps if asked."""
    stage = ctx.stage
    train_set, validation_set = sft_datasets(ctx, tokenizer, train_records, validation_records)
    ctx.events.log(f"{stage.name}: {len(train_set)} training sequences, "
                   f"{len(validation_set) if validation_set is not None else 0} for validation")

    def fit(learning_rate: float, checkpoint_dir):
        model = load_trainable(ctx, model_spec)
        callback = EventsCallback(ctx)
        trainer = ChunkedSFTTrainer(model=model,
                                    args=training_arguments(ctx, stage.train, learning_rate, checkpoint_dir),
                                    train_dataset=train_set, eval_dataset=validation_set,
                                    data_collator=pad_collator(tokenizer.pad_token_id), callbacks=[callback])
        run_trainer(ctx, trainer, callback, checkpoint_dir)
        return trainer, trainer.model

    return train_with_sweep(ctx, stage.train, fit)


def save_stage_model(ctx: RunContext, model: Any, tokenizer: Any, base: ModelSpec, how: str, settings: dict,
                     summary: dict) -> StageResult:
    """Save the stage's model (LoRA/QLoRA adapters merged: a plain transformers folder) with its card, drop its
    resume checkpoints, announce the artifact."""
    bad = nonfinite_parameter(model)
    if bad is not None:  # finite or failed: a NaN model is never saved as the stage's result
        raise Diverged(f"{ctx.stage.name} diverged: weight {bad} of the trained model is not finite; lower "
                       f"train.learning_rate and start the run again (its last good checkpoint is kept).")
    scores = {k: v for k, v in summary.items() if isinstance(v, float)}
    adapter_tags, adapter_how = adapter_note(ctx.stage.train.lora, quantized_base(ctx, base))
    tags = STAGE_TAGS.get(ctx.stage.kind, []) + adapter_tags
    how = f"{how}\n\n{adapter_how}" if adapter_how else how
    card = model_card(f"{ctx.spec.name}: {ctx.stage.name}", base.source, how,
                      {**settings, "data": to_dict(ctx.spec.data)}, scores, tags=tags,
                      datasets=dataset_ids(ctx.spec.data), relation="finetune")
    save_model(merged_for_saving(ctx, model, base), tokenizer, ctx.output_dir, card)
    finish_checkpoints(ctx.checkpoint_dir)
    ctx.events.emit("artifact", stage=ctx.stage.name, kind="model", path=str(ctx.output_dir))
    return StageResult(model_dir=ctx.output_dir, scores=scores, summary=summary)
