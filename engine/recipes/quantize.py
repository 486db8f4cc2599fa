"""The ``quantize`` stage: the paper's last step, 4-bit post-training quantization of a model, with a report of
what it bought (size, memory, speed) and what it cost (ROUGE-L retention) written into the run's evaluation.

Reads top to bottom: resolve the model → quantize and save (before any inference) → measure both models →
merge the report into eval.json / eval.md → rewrite the model card with the scores.
"""
from __future__ import annotations

import time
from pathlib import Path

from engine.core.context import RunContext, StageResult
from engine.contract.runs import write_atomic
from engine.contract.spec import ModelSpec, to_dict


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
        copy_spec = dataclasses.replace(spec, dtype=stored) if stored in ("float16", "bfloat16", "float32") else spec
        save_model(load_model(copy_spec, "cpu"), load_tokenizer(spec), target, f"# Copy of {spec.source}\n")
    return target


def _scores(report: dict) -> dict[str, float]:
    """Headline numbers for the run index: quant/<metric>_retention and quant/<size>_ratio."""
    scores: dict[str, float] = {}
    for key, value in report.get("retention", {}).items():
        if value is not None:
            scores[f"quant/{key}_retention"] = value
    for key, name in (("disk_bytes", "size_ratio"), ("linear_bytes", "linear_ratio"), ("rss_bytes", "memory_ratio"),
                      ("tokens_per_s", "speed_ratio"), ("gguf_bytes", "gguf_size_ratio")):
        if report["ratios"].get(key) is not None:
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
    from engine.quantization.report import quantization_report, report_markdown
    from engine.quantization.four_bit import model_card_text, quantize_model

    stage, q = ctx.stage, ctx.stage.quantize
    spec = ctx.model_spec(stage.model)
    start = time.perf_counter()
    total = 4 if q.report else 1
    ctx.events.progress(stage.name, 0, total, 0.0, unit="phase")
    ctx.events.log(f"{stage.name}: quantizing {spec.source} to 4-bit {q.quant_type} on {ctx.device}")
    out = quantize_model(spec, ctx.output_dir, q, ctx.device)
    ctx.events.emit("artifact", stage=stage.name, kind="model", path=str(out))
    ctx.events.progress(stage.name, 1, total, time.perf_counter() - start, unit="phase")
    if not q.report:
        return StageResult(model_dir=out, summary={"quantize": to_dict(q)})
    ctx.check_cancel()
    original = _original_folder(ctx, spec)
    records = _test_records(ctx)

    def on_progress(phase: str, done: int, steps: int) -> None:
        ctx.check_cancel()
        ctx.events.log(f"{stage.name}: {phase}")
        ctx.events.progress(stage.name, 1 + round(3 * done / max(steps, 1)), total, time.perf_counter() - start,
                            unit="phase")

    report = quantization_report(original, out, records, ctx.spec.data.preset, stage.generation, ctx.device,
                                 on_progress=on_progress)
    report["settings"] = to_dict(q)
    report["source"] = spec.source
    markdown = report_markdown(report, f"4-bit quantization ({stage.name}: {spec.source})")
    ctx.paths.add_stage_report("quantization", stage.name, report, "\n" + markdown)
    ctx.events.emit("artifact", stage=stage.name, kind="eval", path=str(ctx.paths.eval_json))
    scores = _scores(report)
    ctx.events.metric(stage.name, 0, scores)
    card = model_card_text(spec.source, q, scores, kept=report["quantized"].get("layers_full_precision", 0),
                           datasets=dataset_ids(ctx.spec.data))
    write_atomic(out / "README.md", card + "\n" + markdown)
    return StageResult(model_dir=out, scores=scores, summary={"quantize": to_dict(q), "report": report["ratios"]})
