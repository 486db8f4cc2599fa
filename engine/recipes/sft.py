"""Supervised fine-tuning: the teacher on the task (the paper's first step), and the student-only baseline the
paper compares distillation against. Cross-entropy on response tokens, on the stock transformers Trainer with the
loss computed in chunks from the hidden states (engine/training/chunked_losses.py: equal loss and gradients, no
full-batch
logits).

With ``format: cot_template`` the stage is GRPO's cold start: each record that has a reasoning trace becomes a
one-turn chat whose user message is exactly the prompt the GRPO stage will ask (its ``grpo.template``) and whose
answer is ``<think>reasoning</think> <answer>answer</answer>`` (engine/contract/cot_template.py) — so the student
has seen the template before GRPO rewards it for writing it."""
from __future__ import annotations

from engine.contract.cot_template import COT_TEMPLATE, cot_record
from engine.contract.spec import to_dict
from engine.core.context import EngineError, RunContext, StageResult
from engine.models.loading import load_tokenizer
from engine.recipes.common import save_stage_model, train_sft


def validate(ctx: RunContext) -> None:
    """A cold start whose data has no reasoning trace to teach is refused before any stage runs."""
    if ctx.stage.format == "cot_template":
        cot_records(ctx)


def cot_template_of(ctx: RunContext) -> str:
    """The template of the GRPO stage that starts from this stage (the same prompt text), else the default."""
    grpo = next((s for s in ctx.spec.stages if s.kind == "grpo" and s.model == ctx.stage.name), None)
    return grpo.grpo.template if grpo is not None else COT_TEMPLATE


def cot_records(ctx: RunContext) -> tuple[list[dict], list[dict]]:
    """The stage's labelled training records and the validation split, written in the chain-of-thought template;
    EngineError (one sentence) when none has a reasoning trace."""
    from engine.training.support import labelled_split, stage_splits

    template, preset = cot_template_of(ctx), ctx.spec.data.preset
    labelled = labelled_split(ctx)[0]
    train = [r for r in (cot_record(x, template, preset) for x in labelled) if r is not None]
    validation = [r for r in (cot_record(x, template, preset) for x in stage_splits(ctx).validation)
                  if r is not None]
    if not train:
        raise EngineError(f"{ctx.stage.name}: format cot_template teaches reasoning traces, and none of the "
                          f"{len(labelled)} training records has one; use data with a reasoning column (the "
                          "demo_reasoning or codeforces_cot preset) or set format: plain.")
    return train, validation


def run_stage(ctx: RunContext) -> StageResult:
    model_spec = ctx.model_spec(ctx.stage.model)
    tokenizer = load_tokenizer(model_spec)
    if ctx.stage.format == "cot_template":
        train, validation = cot_records(ctx)
        ctx.events.log(f"{ctx.stage.name}: cold start in the GRPO template on the {len(train)} training records "
                       "that have a reasoning trace")
        model, summary = train_sft(ctx, model_spec, tokenizer, train, validation)
        how = (f"Chain-of-thought SFT (a cold start for GRPO: the `<think>`/`<answer>` template) on the "
               f"`{ctx.spec.data.preset}` data set's reasoning traces.")
    else:
        model, summary = train_sft(ctx, model_spec, tokenizer)
        how = f"Supervised fine-tuning (cross-entropy on response tokens) on the `{ctx.spec.data.preset}` data set."
    return save_stage_model(ctx, model, tokenizer, model_spec, how,
                            {"train": to_dict(ctx.stage.train), "format": ctx.stage.format}, summary)
