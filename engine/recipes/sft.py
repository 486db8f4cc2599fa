"""Supervised fine-tuning: the teacher on the task (the paper's first step), and the student-only baseline the
paper compares distillation against. Cross-entropy on response tokens, on the stock transformers Trainer with the
loss computed in chunks from the hidden states (engine/training/chunked_losses.py: equal loss and gradients, no
full-batch
logits)."""
from __future__ import annotations

from engine.core.context import RunContext, StageResult
from engine.contract.spec import to_dict
from engine.models.loading import load_tokenizer
from engine.recipes.common import save_stage_model, train_sft


def run_stage(ctx: RunContext) -> StageResult:
    model_spec = ctx.model_spec(ctx.stage.model)
    tokenizer = load_tokenizer(model_spec)
    model, summary = train_sft(ctx, model_spec, tokenizer)
    how = f"Supervised fine-tuning (cross-entropy on response tokens) on the `{ctx.spec.data.preset}` data set."
    return save_stage_model(ctx, model, tokenizer, model_spec, how, {"train": to_dict(ctx.stage.train)},
                            summary)
