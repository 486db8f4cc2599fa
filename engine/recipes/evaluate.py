"""Evaluation: every listed model answers the held-out split (greedy by default); ROUGE-L F1, exact match and
per-category scores for each, and retention = model ÷ reference (the paper's headline number); then each model
smaller than the reference as the reference's draft model (acceptance and speed-up of greedy decoding,
engine/evaluation/drafting.py). Writes the ``models`` part of eval.json, eval.md (a side-by-side table) and each
model's predictions."""
from __future__ import annotations

import gc
import json
import time

from engine.core import heartbeat
from engine.core.context import EngineError, RunContext, StageCancelled, StageResult
from engine.contract.metric_names import (EVAL_CE, EVAL_DRAFT_ACCEPTANCE, EVAL_DRAFT_SPEEDUP, EVAL_EXACT_MATCH,
                                          EVAL_PARAMETERS, EVAL_RETENTION, EVAL_ROUGE_L, EVAL_WEIGHT_BYTES)
from engine.evaluation.scores import retention
from engine.models.loading import load_model, load_tokenizer
from engine.models.memory import loaded_parameters
from engine.contract.runs import write_atomic
from engine.training.support import stage_splits

HEADLINE = ("rougeL", "exact_match")


def validate(ctx: RunContext) -> None:
    if ctx.spec.data.test_fraction == 0:
        raise EngineError("data.test_fraction is 0, so there is no held-out split to evaluate on; set it to "
                          "e.g. 0.1.")


def _test_records(ctx: RunContext) -> list[dict]:
    records = stage_splits(ctx).test
    limit = ctx.stage.max_eval_samples
    return records[:limit] if limit else records


def run_stage(ctx: RunContext) -> StageResult:
    """Each model answers the same held-out records. Its size comes first (at load); the first model's first
    answers are timed to size the sample count to the device (engine/evaluation/budget.py) and to announce the
    ETA; eval.json is rewritten after each model, so a cancel keeps the models already measured."""
    stage = ctx.stage
    models = stage.models or {stage.model: stage.model}
    records = _test_records(ctx)
    results: dict[str, dict] = {}
    sizes: dict[str, dict] = {}
    try:
        for index, (display, ref) in enumerate(models.items()):
            ctx.check_cancel()
            spec = ctx.model_spec(ref)
            ctx.events.status("running", stage.name, f"evaluating {display} ({index + 1}/{len(models)}) on "
                              f"{len(records)} held-out records")
            heartbeat.phase(f"evaluating {display} ({index + 1}/{len(models)})")
            model, tokenizer = load_model(spec, ctx.device), load_tokenizer(spec)
            sizes[display] = _size_of(ctx, display, model)
            _publish(ctx, results, sizes, records, models, "measuring")
            started = time.monotonic()
            records, scores, predictions = _answer(ctx, display, model, tokenizer, records, (index, len(models)))
            heartbeat.phase(f"{display}: cross-entropy of the {len(records)} references")
            scores["ce"] = _response_ce(ctx, model, tokenizer, records)
            scores["seconds"] = round(time.monotonic() - started, 2)
            scores["source"] = spec.source
            results[display] = scores
            _write_predictions(ctx, display, records, predictions)
            for record, prediction in list(zip(records, predictions))[:3]:
                ctx.events.emit("sample", stage=stage.name, step=0, model=display, prompt=record["instruction"],
                                completion=prediction, reference=record["response"], rewards={})
            del model, tokenizer
            gc.collect()
            _publish(ctx, results, sizes, records, models, "measuring")
        _measure_drafts(ctx, models, records, results, sizes)
    except StageCancelled:
        if results:  # the models already measured stay in eval.json and eval.md, the others are named
            _publish(ctx, results, sizes, records, models, "cancelled", final=True)
        raise
    report = _publish(ctx, results, sizes, records, models, "complete", final=True)
    _update_cards(ctx, models, report)
    headline = {f"{name}/rougeL": s["rougeL"] for name, s in results.items()}
    headline.update({f"{name}/retention": s["retention"] for name, s in results.items()
                     if name != report["reference"] and s["retention"] is not None})
    headline.update({f"{name}/draft_acceptance": s["draft"]["acceptance"] for name, s in results.items()
                     if (s.get("draft") or {}).get("acceptance") is not None})
    return StageResult(scores=headline, summary=report)


def _size_of(ctx: RunContext, display: str, model) -> dict:
    """The model's parameters and the bytes its weights occupy in memory, sent at once as a metric event."""
    size = {"parameters": loaded_parameters(model),  # a 4-bit model's packed weights counted as unpacked
            "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}
    ctx.events.emit("metric", stage=ctx.stage.name, step=0, model=display,
                    values={EVAL_PARAMETERS: size["parameters"], EVAL_WEIGHT_BYTES: size["weight_bytes"]})
    return size


def _answer(ctx: RunContext, display: str, model, tokenizer, records: list[dict],
            part: tuple[int, int]) -> tuple[list[dict], dict, list[str]]:
    """(records answered, scores, answers) of model ``part`` = (index, count): the first model times its first
    answers and sizes the sample count for every model (said before the long part starts); the others answer
    the same records."""
    from engine.evaluation.budget import answer_in_two_parts, budget_s
    from engine.evaluation.generation import answerer, score_answers

    stage, started, total = ctx.stage, time.monotonic(), [len(records)]
    (index, models) = part

    def on_progress(done: int, _total) -> None:
        ctx.events.progress(f"{stage.name}:{display}", done, total[0], time.monotonic() - started, unit="answer",
                            part={"index": index, "count": models})
        ctx.check_cancel()

    def announce(plan) -> None:
        total[0] = plan.chosen
        ctx.events.status("running", stage.name, plan.sentence(models, ctx.device))
        if plan.scaled:
            ctx.events.log(f"{stage.name}: {plan.sentence(models, ctx.device)}", "warning")
        ctx.cache[f"plan:{stage.name}"] = plan.sentence(models, ctx.device)

    answer = answerer(model, tokenizer, ctx.spec.data.preset, stage.generation, ctx.device, on_progress)
    if index == 0:
        records, predictions = answer_in_two_parts(answer, records, models, budget_s(stage.eval_minutes, ctx.device),
                                                   announce, stage.generation.batch_size)
    else:
        predictions = answer(records)
    return records, score_answers(records, predictions, ctx.spec.data.preset), predictions


def _publish(ctx: RunContext, results: dict, sizes: dict, records: list[dict], models: dict, state: str,
             final: bool = False) -> dict:
    """eval.json as measured so far (``evaluation_state``: measuring, cancelled or complete, and the models not
    yet measured); ``final``: retention, the metric events and eval.md too."""
    stage = ctx.stage
    reference = stage.reference if stage.reference in results else next(iter(results), stage.reference)
    for scores in results.values():
        for key in HEADLINE:
            scores[f"retention_{key}"] = retention(scores.get(key), results[reference].get(key))
        scores["retention"] = scores["retention_rougeL"]
    report = {"reference": reference, "n": len(records), "data": ctx.spec.data.preset, "models": results,
              "sizes": sizes, "evaluation_state": state, "models_pending": [m for m in models if m not in results]}
    if ctx.cache.get(f"plan:{stage.name}"):
        report["samples_plan"] = ctx.cache[f"plan:{stage.name}"]
    ctx.paths.merge_eval(report)
    if final:
        for display, scores in results.items():
            values = {EVAL_ROUGE_L: scores["rougeL"], EVAL_EXACT_MATCH: scores["exact_match"],
                      EVAL_RETENTION: scores["retention"]}
            if scores.get("ce") is not None:
                values[EVAL_CE] = scores["ce"]
            for key, name in (("acceptance", EVAL_DRAFT_ACCEPTANCE), ("speedup", EVAL_DRAFT_SPEEDUP)):
                if (scores.get("draft") or {}).get(key) is not None:
                    values[name] = scores["draft"][key]
            ctx.events.emit("metric", stage=stage.name, step=0, model=display, values=values)
        write_atomic(ctx.paths.eval_md, markdown_table(report))
    ctx.events.emit("artifact", stage=stage.name, kind="eval", path=str(ctx.paths.eval_json))
    return report


def _draft_candidates(ctx: RunContext, models: dict, results: dict, sizes: dict) -> list[str]:
    """The measured models smaller than the reference (a draft must be cheaper than the model it drafts for)."""
    reference = ctx.stage.reference
    if ctx.stage.draft_samples < 0 or reference not in results or reference not in sizes:
        return []
    return [m for m in models if m != reference and m in results and m in sizes
            and sizes[m]["parameters"] < sizes[reference]["parameters"]]


def _measure_drafts(ctx: RunContext, models: dict, records: list[dict], results: dict, sizes: dict) -> None:
    """Each smaller model as the reference's draft on the first held-out prompts (a count sized to the device):
    the reference loads once, each draft beside it in turn; eval.json gains each one's ``draft`` entry."""
    from engine.evaluation.drafting import draft_prompt_count
    from engine.training_data.formatting import prompt_texts

    stage, drafts = ctx.stage, _draft_candidates(ctx, models, results, sizes)
    if not drafts:
        return
    count = min(len(records), draft_prompt_count(stage.draft_samples, ctx.device))
    teacher_spec = ctx.model_spec(models[stage.reference])
    teacher, teacher_tok = load_model(teacher_spec, ctx.device), load_tokenizer(teacher_spec)
    prompts = prompt_texts(teacher_tok, records[:count], ctx.spec.data.preset)
    for index, display in enumerate(drafts):
        ctx.check_cancel()
        sentence = (f"{display} as {stage.reference}'s draft model ({index + 1}/{len(drafts)}): greedy answers "
                    f"to {count} held-out prompts with and without it")
        ctx.events.status("running", stage.name, sentence)
        heartbeat.phase(sentence)
        results[display]["draft"] = _measure_draft(ctx, (teacher, teacher_tok), display, models[display], prompts)
        _publish(ctx, results, sizes, records, models, "measuring")
    del teacher, teacher_tok
    gc.collect()


def _measure_draft(ctx: RunContext, teacher: tuple, display: str, ref: str, prompts: list[str]) -> dict:
    """One model as the draft of ``teacher`` = (model, tokenizer): its eval.json ``draft`` entry. Progress is a
    phase of the stage without a ``part`` (the studio's bar keeps the models' share, the ETA counts it)."""
    from engine.evaluation.drafting import measure_draft
    from engine.models.out_of_memory import is_out_of_memory

    stage, spec, started = ctx.stage, ctx.model_spec(ref), time.monotonic()
    student, student_tok = load_model(spec, ctx.device), load_tokenizer(spec)

    def on_progress(done: int, total: int) -> None:
        ctx.events.progress(f"{stage.name}:{display}:draft", done, total, time.monotonic() - started,
                            unit="answer")
        ctx.check_cancel()

    try:
        report = measure_draft(*teacher, student, student_tok, prompts, stage.generation, ctx.device, on_progress)
    except (ValueError, RuntimeError, TypeError) as exc:
        if is_out_of_memory(exc):
            raise
        # a pair transformers cannot decode together (e.g. a cache that cannot be cropped) leaves quality intact
        ctx.events.log(f"{stage.name}: {display} could not be measured as {stage.reference}'s draft model: "
                       f"{str(exc)[:300]}", "warning")
        return {"error": str(exc)[:300]}
    finally:
        del student, student_tok
        gc.collect()
    if report.identical < report.prompts:  # greedy assisted decoding should change nothing: say so if it did
        ctx.events.log(f"{stage.name}: {display} as a draft changed {report.prompts - report.identical} of "
                       f"{report.prompts} greedy answers of {stage.reference} (rounding in the batched "
                       "verification step)", "warning")
    return report.as_dict()


def _update_cards(ctx: RunContext, models: dict, report: dict) -> None:
    """The model card of each evaluated model this run saved gains an Evaluation section (ROUGE-L, retention,
    draft acceptance and speed-up); folders from outside the run are never written to."""
    from engine.models.cards import evaluation_section, with_evaluation

    stages = {s.name for s in ctx.spec.stages}
    for display, ref in models.items():
        card = ctx.paths.model(ref) / "README.md" if ref in stages else None
        if card is None or display not in report["models"] or not card.is_file():
            continue
        section = evaluation_section(report["models"][display], report["reference"], report["n"], report["data"])
        write_atomic(card, with_evaluation(card.read_text(encoding="utf-8", errors="replace"), section))


def _response_ce(ctx: RunContext, model, tokenizer, records: list[dict]) -> float | None:
    """Cross-entropy of the references' response tokens under the model (teacher-forced): the same ``eval/ce``
    the training stages report on validation, so every model of the run compares on one number."""
    from engine.training_data.formatting import tokenize_for_sft
    from engine.evaluation.generation import response_cross_entropy

    labelled = [r for r in records if str(r.get("response") or "").strip()]
    if not labelled:
        return None
    rows = tokenize_for_sft(tokenizer, labelled, ctx.spec.data.max_length, ctx.spec.data.preset)
    return response_cross_entropy(model, rows, tokenizer.pad_token_id, ctx.stage.generation.batch_size, ctx.device)


def _write_predictions(ctx: RunContext, display: str, records: list[dict], predictions: list[str]) -> None:
    path = ctx.work_dir / f"predictions-{display}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for record, prediction in zip(records, predictions):
            f.write(json.dumps({"id": record.get("id"), "category": record.get("category"),
                                "prompt": record["instruction"], "reference": record["response"],
                                "prediction": prediction}, ensure_ascii=False) + "\n")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def markdown_table(report: dict) -> str:
    """The side-by-side table: one row per model, then ROUGE-L per category."""
    models = report["models"]
    lines = [f"# Evaluation on {report['n']} held-out `{report['data']}` records", "",
             f"Retention is each model's score ÷ the reference model's (`{report['reference']}`).", ""]
    if report.get("samples_plan"):
        lines += [report["samples_plan"] + ".", ""]
    if report.get("models_pending"):  # a cancelled evaluation: which models were not measured
        lines += [f"Not measured ({report.get('evaluation_state', 'cancelled')}): "
                  f"{', '.join(report['models_pending'])}.", ""]
    lines += [
             "| model | ROUGE-L | exact match | retention (ROUGE-L) | retention (exact) | CE (response tokens) "
             "| draft acceptance | draft speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in models.items():
        ce = f"{s['ce']:.4f}" if isinstance(s.get("ce"), float) else "–"
        draft = s.get("draft") or {}
        speedup = f"{draft['speedup']:.2f}×" if isinstance(draft.get("speedup"), float) else "–"
        lines.append(f"| {name} | {s['rougeL']:.4f} | {s['exact_match']:.4f} | {_pct(s.get('retention_rougeL'))} "
                     f"| {_pct(s.get('retention_exact_match'))} | {ce} | {_pct(draft.get('acceptance'))} "
                     f"| {speedup} |")
    drafts = {name: s["draft"] for name, s in models.items() if s.get("draft")}
    measured = [d for d in drafts.values() if "prompts" in d]
    if measured:
        lines += ["", f"Draft acceptance: the share of a model's draft tokens `{report['reference']}` keeps when the "
                  f"model drafts for it (speculative decoding, greedy, {measured[0]['prompts']} held-out prompts); "
                  "speed-up: its greedy tokens/s with the draft ÷ without."]
    lines += [f"{name} could not be measured as a draft: {d['error']}" for name, d in drafts.items() if "error" in d]
    categories = sorted({c for s in models.values() for c in s.get("per_category", {})})
    if categories:
        lines += ["", "## ROUGE-L by category", "", "| category | " + " | ".join(models) + " |",
                  "|---|" + "---|" * len(models)]
        for cat in categories:
            cells = [f"{s.get('per_category', {}).get(cat, {}).get('rougeL', float('nan')):.4f}"
                     for s in models.values()]
            lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
