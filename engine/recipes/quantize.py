"""The ``quantize`` stage: the paper's last step, 4-bit post-training quantization of a model, with a report of
what it bought (size, memory, speed) and what it cost (ROUGE-L retention) written into the run's evaluation.

Reads top to bottom: resolve the model → quantize and save (before any inference) → measure both models →
merge the report into eval.json / eval.md → rewrite the model card with the scores.
"""
from __future__ import annotations

import time
from pathlib import Path

from engine.core.context import RunContext, StageCancelled, StageResult
from engine.contract.runs import write_atomic
from engine.contract.spec import ModelSpec, to_dict
from engine.contract.vocabulary import COMPUTE_DTYPES


def _original_folder(ctx: RunContext, spec: ModelSpec) -> Path:
    """A local folder of the full-precision model to compare against; hub and GGUF sources are saved once into
    the stage's work folder (GGUF: de-quantized to its load dtype by transformers)."""
    from engine.models.loading import load_model, load_tokenizer, resolve_source, save_model

    resolved = resolve_source(spec.source)
    if resolved.kind in ("folder", "demo") and any(Path(resolved.location).glob("*.safetensors")):
        return Path(resolved.location)
    if resolved.kind == "gguf":  # its unpacked cache folder (the report also compares with the file itself)
        return Path(resolved.weights_args()[0])
    target = ctx.work_dir / "original"
    if not (target / "config.json").exists():
        import dataclasses

        from engine.quantization.four_bit import storage_dtype

        ctx.events.log(f"{ctx.stage.name}: saving a local copy of {spec.source} to compare against")
        # like with like: the copy keeps the source's storage dtype, not the float32 a CPU load computes in
        stored = str(storage_dtype(resolved.location, {}, None) or "").replace("torch.", "")
        copy_spec = dataclasses.replace(spec, dtype=stored) if stored in COMPUTE_DTYPES else spec
        save_model(load_model(copy_spec, "cpu"), load_tokenizer(spec), target, f"# Copy of {spec.source}\n")
    return target


def _scores(report: dict) -> dict[str, float]:
    """Headline numbers for the run index, as far as measured: quant/<metric>_retention, quant/<size>_ratio."""
    scores: dict[str, float] = {}
    for key, value in report.get("retention", {}).items():
        if value is not None:
            scores[f"quant/{key}_retention"] = value
    for key, name in (("disk_bytes", "size_ratio"), ("linear_bytes", "linear_ratio"), ("rss_bytes", "memory_ratio"),
                      ("tokens_per_s", "speed_ratio"), ("gguf_bytes", "gguf_size_ratio")):
        if report.get("ratios", {}).get(key) is not None:
            scores[f"quant/{name}"] = report["ratios"][key]
    for key, value in report["quantized"].get("scores", {}).items():
        scores[f"quant/{key}"] = value
    return scores


def _test_records(ctx: RunContext) -> list[dict]:
    from engine.training.support import stage_splits

    records = list(stage_splits(ctx).test)
    limit = ctx.stage.max_eval_samples
    return records[:limit] if limit else records


def run_stage(ctx: RunContext) -> StageResult:
    from engine.models.cards import dataset_ids
    from engine.quantization.four_bit import model_card_text, quantize_model

    stage, q = ctx.stage, ctx.stage.quantize
    spec = ctx.model_spec(stage.model)
    start = time.perf_counter()
    ctx.events.progress(stage.name, 0, 4 if q.report else 1, 0.0, unit="phase")
    ctx.events.log(f"{stage.name}: quantizing {spec.source} to 4-bit {q.quant_type} on {ctx.device}")
    out = quantize_model(spec, ctx.output_dir, q, ctx.device)
    ctx.events.emit("artifact", stage=stage.name, kind="model", path=str(out))
    ctx.events.progress(stage.name, 1, 4 if q.report else 1, time.perf_counter() - start, unit="phase")
    if not q.report:
        return StageResult(model_dir=out, summary={"quantize": to_dict(q)})
    ctx.check_cancel()
    report, markdown, scores = _report(ctx, spec, out, start)
    card = model_card_text(spec.source, q, scores, kept=report["quantized"].get("layers_full_precision", 0),
                           datasets=dataset_ids(ctx.spec.data))
    write_atomic(out / "README.md", card + "\n" + markdown)
    return StageResult(model_dir=out, scores=scores, summary={"quantize": to_dict(q), "report": report["ratios"]})


def _report(ctx: RunContext, spec: ModelSpec, out: Path, start: float) -> tuple[dict, str, dict]:
    """The before/after report, published part by part (eval.json, an ``eval`` artifact and the scores known so
    far as a metric event): sizes at once, then memory and speed, then quality with its plan and ETA announced
    before it starts. A cancel keeps the parts already measured (the report says which) and stops the stage."""
    from engine.evaluation.budget import budget_s
    from engine.quantization.report import quantization_report, report_markdown

    stage = ctx.stage
    title = f"4-bit quantization ({stage.name}: {spec.source})"
    latest: dict = {}

    def publish(report: dict, markdown: str = "") -> None:
        report.update(settings=to_dict(stage.quantize), source=spec.source)
        latest["report"] = report
        ctx.paths.add_stage_report("quantization", stage.name, report, markdown)
        ctx.events.emit("artifact", stage=stage.name, kind="eval", path=str(ctx.paths.eval_json))
        ctx.events.metric(stage.name, 0, _scores(report))
        ctx.events.log(f"{stage.name}: measured {', '.join(report['measured'])}")

    def on_progress(phase: str, done: int, steps: int) -> None:
        ctx.check_cancel()
        ctx.events.progress(stage.name, 1 + round(3 * done / max(steps, 1)), 4, time.perf_counter() - start,
                            unit="phase")

    def announce(plan) -> None:  # before the long part: how many answers, about how long, and any scaling
        ctx.events.status("running", stage.name, plan.sentence(2, ctx.device))
        if plan.scaled:
            ctx.events.log(f"{stage.name}: {plan.sentence(2, ctx.device)}", "warning")

    answers_started = time.perf_counter()

    def on_answer(done: int, total: int) -> None:
        ctx.events.progress(f"{stage.name}:answers", done, total, time.perf_counter() - answers_started,
                            unit="answer")
        ctx.check_cancel()

    try:
        report = quantization_report(_original_folder(ctx, spec), out, _test_records(ctx), ctx.spec.data.preset,
                                     stage.generation, ctx.device, on_progress=on_progress, publish=publish,
                                     budget=budget_s(stage.eval_minutes, ctx.device), announce=announce,
                                     on_answer=on_answer)
    except StageCancelled:
        if "report" in latest:  # what was measured stays, marked as such, in eval.json and eval.md
            latest["report"]["state"] = "cancelled"
            publish(latest["report"], "\n" + report_markdown(latest["report"], title))
        raise
    markdown = report_markdown(report, title)
    publish(report, "\n" + markdown)
    return report, markdown, _scores(report)
