"""Chain-of-thought GRPO: the paper's third stage, on TRL's ``GRPOTrainer``, rewarded for correctness and not
only for format.

Reads top to bottom: ``validate`` (everything checkable before any stage runs) → prompts from the run's records
in the stage's ``<think>/<answer>`` template (chat messages, so the model's chat template applies) → held-out
evaluation of the starting model → GRPO (full, LoRA, or QLoRA on a 4-bit base) → the same evaluation of the
trained model → save. Live signals: ``engine.training.callbacks.EventsCallback`` renames TRL's logs (``reward`` →
``grpo/reward``, ``rewards/<name>/mean`` → ``grpo/reward/<name>``, ``kl`` → ``grpo/kl`` — logged by TRL only
when β > 0 —, ``completions/mean_length`` → ``grpo/completion_length``, ``loss``, ``learning_rate``), and
``SampleCallback`` here emits every ``grpo.sample_every`` steps a ``sample`` event with the first completion of
the latest batch and its rewards (remembered by wrapping the reward functions).
"""
from __future__ import annotations

import json
import logging
from typing import Any
from collections.abc import Callable

from transformers import TrainerCallback

from engine.contract.cot_template import task_prompt  # the one home of the template's prompt (and bench's)
from engine.contract.metric_names import grpo_held_out
from engine.core.context import EngineError, RunContext, StageResult
from engine.rewards.functions import (answer_block, build_reward_functions, check_code_sandbox, completion_text,
                            make_answer_correct, make_code_tests, make_format_strict, reward_weights,
                            validate_rewards)
from engine.contract.runs import json_safe, write_atomic
from engine.contract.spec import GenerationSpec, to_dict

log = logging.getLogger(__name__)

CORRECTNESS_REWARDS = ("answer_correct", "code_tests")


# ------------------------------------------------------------------ checks and data --------------------------------

def validate(ctx: RunContext) -> None:
    """EngineError (one sentence) for anything that would fail later: rewards the data or template cannot
    support, a batch that does not split into groups, a missing model folder."""
    from engine.models.loading import resolve_source
    from engine.training.support import stage_splits

    stage, grpo, train = ctx.stage, ctx.stage.grpo, ctx.stage.train
    if stage.model not in [s.name for s in ctx.spec.stages]:  # an earlier stage's model is checked when it runs
        resolve_source(ctx.model_spec(stage.model).source)
    per_generation = train.batch_size * train.gradient_accumulation
    if per_generation % grpo.num_generations:
        raise EngineError(f"{stage.name}: train.batch_size × train.gradient_accumulation ({per_generation}) must be "
                          f"a multiple of grpo.num_generations ({grpo.num_generations}), the completions per "
                          "prompt; change one of them.")
    validate_rewards(grpo.rewards, grpo.template, stage_splits(ctx).train, grpo.allow_unsandboxed_code)


def grpo_rows(records: list[dict], template: str, preset: str, correctness_only: bool) -> list[dict]:
    """TRL rows: ``prompt`` as chat messages, ``answer`` and ``tests`` (JSON text, so Arrow needs no schema for
    them) passed through to the reward functions. With ``correctness_only``, records that no correctness reward
    can score are left out (they would only teach the format)."""
    rows = []
    for r in records:
        answer = str(r["answer"]).strip() if r.get("answer") not in (None, "") else None
        tests = json.dumps(r["tests"]) if r.get("tests") else None
        if correctness_only and answer is None and tests is None:
            continue
        rows.append({"prompt": [{"role": "user", "content": task_prompt(r, template, preset)}],
                     "answer": answer, "tests": tests})
    return rows


def held_out_records(ctx: RunContext) -> list[dict]:
    from engine.training.support import stage_splits

    splits = stage_splits(ctx)
    records = splits.test or splits.validation
    limit = ctx.stage.max_eval_samples
    return records[:limit] if limit else records


# ------------------------------------------------------------------ evaluation -------------------------------------

def score_completions(records: list[dict], completions: list[str]) -> dict:
    """Correctness (answer match, or the fraction of tests passed) overall and per ``correct/<category>``, strict
    format rate and ROUGE-L of the answer (the <answer> block, or the whole completion when there is none)
    against the reference answer/program."""
    from engine.evaluation.scores import rouge_l

    n = len(records)
    answers = [str(r["answer"]) if r.get("answer") not in (None, "") else None for r in records]
    tests = [r.get("tests") or None for r in records]
    by_answer = make_answer_correct()([""] * n, completions, answer=answers)
    by_tests = make_code_tests()([""] * n, completions, tests=tests)
    correct = [a if a is not None else t for a, t in zip(by_answer, by_tests)]
    scored = [c for c in correct if c is not None]
    formats = make_format_strict()([""] * n, completions)
    rouge = [rouge_l(answer_block(c) or c, a if a is not None else str(r.get("response") or ""))
             for c, a, r in zip(completions, answers, records)]
    scores = {"correct": sum(scored) / len(scored) if scored else 0.0, "format": sum(formats) / max(n, 1),
              "rougeL": sum(rouge) / max(n, 1), "n": n, "scored": len(scored),
              "answers_correct": _mean([a for a in by_answer if a is not None]),
              "tests_passed": _mean([t for t in by_tests if t is not None])}
    for category in sorted({r["category"] for r in records if r.get("category")}):  # where GRPO helps, where not
        scores[f"correct/{category}"] = _mean([c for c, r in zip(correct, records)
                                               if r.get("category") == category and c is not None])
    return scores


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def evaluate_policy(ctx: RunContext, model: Any, tokenizer: Any, records: list[dict]) -> tuple[dict, list[str]]:
    """Greedy completions of the held-out prompts, scored by ``score_completions``."""
    grpo = ctx.stage.grpo
    return evaluate_completions(model, tokenizer, records, grpo.template, ctx.spec.data.preset,
                                grpo.max_completion_length, ctx.stage.generation.batch_size, ctx.device)


def evaluate_completions(model: Any, tokenizer: Any, records: list[dict], template: str, preset: str,
                         max_new_tokens: int, batch_size: int, device: str) -> tuple[dict, list[str]]:
    """Greedy completions of ``records`` in the GRPO ``template`` and their scores (also for benchmarks)."""
    from engine.evaluation.generation import generate_answers

    gen = GenerationSpec(max_new_tokens=max_new_tokens, greedy=True, batch_size=batch_size)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": task_prompt(r, template, preset)}],
                                             tokenize=False, add_generation_prompt=True) for r in records]
    completions = generate_answers(model, tokenizer, prompts, gen, device)
    return score_completions(records, completions), completions


# ------------------------------------------------------------------ live samples -----------------------------------

class RewardRecorder:
    """Wraps reward functions so that the latest batch (prompts, completions, each reward) can be shown."""

    def __init__(self) -> None:
        self.prompts: list = []
        self.completions: list = []
        self.rewards: dict[str, list] = {}

    def wrap(self, fn: Callable) -> Callable:
        def recorded(prompts: list, completions: list, **kwargs: Any) -> list:
            out = fn(prompts, completions, **kwargs)
            if prompts is not self.prompts:
                self.prompts, self.completions, self.rewards = prompts, completions, {}
            self.rewards[fn.__name__] = list(out)
            return out
        recorded.__name__ = recorded.__qualname__ = fn.__name__
        return recorded

    def sample(self, index: int = 0) -> dict | None:
        if not self.completions:
            return None
        prompt = self.prompts[index]
        prompt_text = prompt[-1]["content"] if isinstance(prompt, list) else str(prompt)
        return {"prompt": prompt_text, "completion": completion_text(self.completions[index]),
                "rewards": {name: values[index] for name, values in self.rewards.items()}}


class SampleCallback(TrainerCallback):
    """Every ``every`` steps, a ``sample`` event with a prompt, its completion and the rewards it earned."""

    def __init__(self, ctx: RunContext, recorder: RewardRecorder, every: int) -> None:
        self.ctx, self.recorder, self.every = ctx, recorder, every

    def on_step_end(self, args, state, control, **kwargs):
        sample = self.recorder.sample()
        if sample is not None and state.global_step % self.every == 0:
            self.ctx.events.emit("sample", stage=self.ctx.stage.name, step=state.global_step, **sample)


# ------------------------------------------------------------------ model and trainer ------------------------------

def grpo_config(ctx: RunContext) -> Any:
    from trl import GRPOConfig

    from engine.evaluation.generation import trl_vllm_args
    from engine.training.support import training_arguments

    stage, grpo = ctx.stage, ctx.stage.grpo
    return training_arguments(
        ctx, stage.train, stage.train.learning_rate, ctx.checkpoint_dir, config_class=GRPOConfig,
        num_generations=grpo.num_generations, max_completion_length=grpo.max_completion_length, beta=grpo.beta,
        temperature=grpo.temperature, reward_weights=reward_weights(grpo.rewards), log_completions=False,
        # Unscaled advantages (Dr. GRPO): dividing by the group's std would turn the small format/length
        # differences inside a group that is all wrong into full-size advantages, and correctness (weight 1)
        # would no longer dominate the shaping rewards (weight ~0.1).
        scale_rewards="none",
        include_num_input_tokens_seen=False, per_device_eval_batch_size=grpo.num_generations,
        **trl_vllm_args(ctx.device))  # TRL's vLLM generation on CUDA when vLLM is installed


def train_grpo(ctx: RunContext, model: Any, tokenizer: Any, rows: list[dict]) -> tuple[Any, int]:
    """Train; returns the trained model and the number of optimizer steps taken."""
    from datasets import Dataset
    from trl import GRPOTrainer

    from engine.training.callbacks import EventsCallback
    from engine.training.support import run_trainer

    grpo = ctx.stage.grpo
    recorder = RewardRecorder()
    functions = [recorder.wrap(fn) for fn in build_reward_functions(
        grpo.rewards, length_range=grpo.length_range, tokenizer=tokenizer)]
    events = EventsCallback(ctx)  # after the sample callback: a cancel that arrives meanwhile stops this step
    trainer = GRPOTrainer(model=model, reward_funcs=functions, args=grpo_config(ctx),
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          callbacks=[SampleCallback(ctx, recorder, grpo.sample_every), events])
    run_trainer(ctx, trainer, events, ctx.checkpoint_dir)
    return trainer.model, trainer.state.global_step


# ------------------------------------------------------------------ the stage --------------------------------------

def run_stage(ctx: RunContext) -> StageResult:
    from engine.models.loading import load_tokenizer
    from engine.recipes.common import save_stage_model
    from engine.training.support import load_trainable, merged_for_saving, stage_splits

    validate(ctx)
    stage, grpo = ctx.stage, ctx.stage.grpo
    model_spec = ctx.model_spec(stage.model)
    tokenizer = load_tokenizer(model_spec)
    correctness_only = any(r.name in CORRECTNESS_REWARDS for r in grpo.rewards)
    rows = grpo_rows(stage_splits(ctx).train, grpo.template, ctx.spec.data.preset, correctness_only)
    if not rows:
        raise EngineError(f"{stage.name}: no training record has an answer or tests for the correctness rewards.")
    held_out = held_out_records(ctx)
    ctx.events.log(f"{stage.name}: {len(rows)} training prompts, {len(held_out)} held out for evaluation")
    if any(r.name == "code_tests" for r in grpo.rewards):
        sandbox = check_code_sandbox(grpo.allow_unsandboxed_code)
        unsafe = " — no kernel boundary, allowed by grpo.allow_unsandboxed_code" if sandbox == "none" else ""
        ctx.events.log(f"{stage.name}: code_tests programs run in the {sandbox} sandbox{unsafe}",
                       level="warning" if unsafe else "info")

    model = load_trainable(ctx, model_spec)
    before, _ = evaluate_policy(ctx, model, tokenizer, held_out)
    ctx.events.metric(stage.name, 0, _eval_metrics(before, "before"))
    if held_out and before["format"] == 0 and before["correct"] == 0:
        # GRPO learns only from rewards the model sometimes earns; a model that never writes the template
        # (e.g. a KD student straight from distillation) needs a chain-of-thought SFT stage first.
        ctx.events.log(f"{stage.name}: the starting model answers none of the {len(held_out)} held-out prompts in "
                       "the <think>/<answer> template and gets none right, so GRPO has little to reinforce; "
                       "train an SFT stage with format: cot_template on chain-of-thought examples first (a cold start; "
                       "the wizard's Method page adds one).",
                       level="warning")
    ctx.check_cancel()
    model, steps = train_grpo(ctx, model, tokenizer, rows)
    model = merged_for_saving(ctx, model, model_spec)
    after, completions = evaluate_policy(ctx, model, tokenizer, held_out)
    ctx.events.metric(stage.name, steps, _eval_metrics(after, "after"))

    report = {"before": before, "after": after, "held_out": len(held_out),
              "examples": [{"prompt": task_prompt(r, grpo.template, ctx.spec.data.preset), "completion": c}
                           for r, c in list(zip(held_out, completions))[:5]]}
    eval_path = ctx.work_dir / "grpo_eval.json"
    write_atomic(eval_path, json.dumps(json_safe(report), indent=2, ensure_ascii=False))
    ctx.events.emit("artifact", stage=stage.name, kind="eval", path=str(eval_path))
    record_in_run_evaluation(ctx, before, after, len(held_out))
    summary = {**_eval_metrics(before, "before"), **_eval_metrics(after, "after")}
    how = (f"Chain-of-thought GRPO (TRL GRPOTrainer) on the `{ctx.spec.data.preset}` data with rewards "
           + ", ".join(f"{r.name}×{r.weight:g}" for r in grpo.rewards) + ".")
    return save_stage_model(ctx, model, tokenizer, model_spec, how,
                            {"grpo": to_dict(grpo), "train": to_dict(stage.train)}, summary)


def record_in_run_evaluation(ctx: RunContext, before: dict, after: dict, held_out: int) -> None:
    """The before/after scores go into the run's eval.json under ``grpo.<stage>`` (next to the evaluate stage's
    ``models``, e.g. the KD student's ROUGE-L) and as a table at the end of eval.md."""
    if ctx.paths is None:
        return
    rows = [("correctness (answers + tests)", "correct"), ("answers correct", "answers_correct"),
            ("tests passed", "tests_passed"), ("strict format", "format"), ("ROUGE-L", "rougeL")]
    table = [f"\n## GRPO `{ctx.stage.name}` (from `{ctx.stage.model}`, {held_out} held-out prompts, greedy)\n",
             "| metric | before | after |", "|---|---|---|"]
    table += [f"| {name} | {_percent(before.get(key))} | {_percent(after.get(key))} |" for name, key in rows]
    report = {"model": ctx.stage.model, "held_out": held_out, "before": before, "after": after}
    ctx.paths.add_stage_report("grpo", ctx.stage.name, report, "\n".join(table) + "\n")


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _eval_metrics(scores: dict, when: str) -> dict:
    return {grpo_held_out(key, when): float(scores[key]) for key in ("correct", "format", "rougeL")}
