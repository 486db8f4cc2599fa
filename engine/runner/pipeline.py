"""Runs a spec's stages in order inside one run folder: checks everything that can be checked before the first
step, then dispatches each stage to its recipe, records what it produced, and turns failures into one clear
``error`` event and a run marked failed or cancelled (never a half-written run passed off as finished)."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from typing import Any

from engine.core import heartbeat
from engine.core.context import EngineError, RunContext, StageCancelled, StageResult
from engine.contract.protocol import EventWriter, io_sentence
from engine.contract.errors import echo, shorten
from engine.contract.run_status import STAGE_DONE_FILE
from engine.contract.safe_json import safe_json_loads
from engine.contract.runs import RunPaths, RunStore, StoreError, json_safe, read_inside, write_atomic
from engine.contract.spec import BASE_MODELS, REPORT_TO, RunSpec, base_model_of
from engine.contract.stage_kinds import stage_kind
from engine.contract.stages import DistillStage, ExportStage, QuantizeStage, StageSpec
from engine.core.ranks import any_rank, is_main_process, run_stage_on_ranks
from engine.models import out_of_memory
from engine.recipes import recipe_for

log = logging.getLogger(__name__)
MEMORY_ADVICE = "memory_advice"  # cache key: each stage's cheapest memory change (engine/models/out_of_memory.py)
NO_MEMORY_CHECK_ENV = "COMPRESSION_ENGINE_NO_MEMORY_CHECK"  # set to 1 to run a plan the estimate refuses


def stage_plan(spec: RunSpec) -> list[dict]:
    """What each stage will do as far as the spec says — its kind, the base model it trains (teacher, student)
    and its optimizer steps (×the sweep's rates; None when epochs decide) — so that a reader can weigh the stages
    still to come by their work instead of counting them as equal shares (the studio's whole-run ETA)."""
    plan = []
    for stage in spec.stages:
        train = stage.train if stage_kind(stage).trains else None  # the others have no optimizer steps
        rates = max(1, len(train.sweep_learning_rates or [])) if train else 1
        plan.append({"stage": stage.name, "kind": stage.kind, "model": base_model_of(spec, stage.model),
                     "steps": train.max_steps * rates if train and train.max_steps > 0 else None})
    return plan


def _done_marker(paths: RunPaths, stage: StageSpec):
    return paths.stage_dir(stage.name) / STAGE_DONE_FILE


def _read_marker(marker: Any, events: EventWriter) -> dict | None:
    """A finished stage's record, or None (the stage runs again) when its marker cannot be trusted: not JSON
    data, not an object, a link or a FIFO in its place. Running a stage again is always safe; trusting a damaged
    marker would skip it on a lie."""
    try:
        record = safe_json_loads(read_inside(marker))
    except (OSError, ValueError) as exc:
        record = exc
    if isinstance(record, dict):
        return record
    events.log(f"{marker} is damaged ({shorten(record, 120)}); running that stage again", level="warning")
    return None


def _needs_data(stage: StageSpec) -> bool:
    """Training and evaluation read the data set; a quantize stage only for its report; an export never."""
    if isinstance(stage, QuantizeStage):
        return stage.quantize.report
    return not isinstance(stage, ExportStage)


def check_report_to(spec: RunSpec) -> None:
    """Every tracker in ``report_to`` is importable, or one sentence naming the field and the install command."""
    import importlib.util

    for name in spec.report_to:
        if importlib.util.find_spec(name) is None:
            package = REPORT_TO[name]
            raise EngineError(f"report_to: {echo(name)} needs the {package} package, which is not installed; run pip "
                              f"install {package} in the engine's environment, or remove {name} from report_to.")


def preflight(spec: RunSpec, device: str, events: EventWriter, cache: dict) -> None:
    """Everything checkable before a run folder exists: models exist, data parses, token-level KD is possible,
    each recipe's own validation. Raises EngineError with the sentence to show; nothing is created."""
    from engine.models.loading import check_source
    from engine.models.pairing import check_method, pair_models

    check_report_to(spec)

    def ctx_for(stage: StageSpec) -> RunContext:
        return RunContext(spec=spec, stage=stage, paths=None, events=events, device=device, cache=cache)

    refs = set()
    for stage in spec.stages:
        refs.update(base_model_of(spec, r) for r in stage.model_refs().values())
    for ref in sorted(refs):
        check_source(getattr(spec, ref).source if ref in BASE_MODELS else ref)  # config and tokenizer, no weights
    if any(_needs_data(s) for s in spec.stages):
        from engine.training.support import stage_splits

        stage_splits(ctx_for(spec.stages[0]))  # a malformed record stops the run here, before any training
    for stage in spec.stages:
        ctx = ctx_for(stage)
        if stage_kind(stage).trains:  # a precision the device cannot do fails here, not mid-run
            from engine.training.precision import resolve_precision

            resolve_precision(stage.train.precision, device, f"{stage.name}.train.precision")
        if isinstance(stage, DistillStage):  # what the pair allows, from tokenizers and configs: said, then enforced
            teacher_ref, student_ref = base_model_of(spec, stage.teacher), base_model_of(spec, stage.model)
            check_method(stage.name, stage.distill.method,  # the stage logs the pair's reason when it starts
                         pair_models(ctx.model_spec(teacher_ref), ctx.model_spec(student_ref)))
        validate = getattr(recipe_for(stage.kind), "validate", None)
        if validate is not None:
            validate(ctx)
    if not os.environ.get(NO_MEMORY_CHECK_ENV):
        from engine.models.memory_plan import check_plan

        check_plan(spec, device)  # last: from configs only, before any weight is read
        # What to say if memory runs out anyway, worked out now: afterwards even the estimate may not fit.
        cache[MEMORY_ADVICE] = out_of_memory.advice_by_stage(spec, device)


def run_pipeline(spec: RunSpec, paths: RunPaths, events: EventWriter, store: RunStore,
                 cancel: threading.Event, device: str, cache: dict | None = None) -> str:
    """Run every stage not yet done (``cache`` carries what preflight loaded); returns the final status
    (finished, cancelled or failed)."""
    cache = {} if cache is None else cache

    def ctx_for(stage: StageSpec) -> RunContext:
        return RunContext(spec=spec, stage=stage, paths=paths, events=events, cancel=cancel, device=device,
                          cache=cache)

    started = time.time()
    summary: dict[str, Any] = {"stages": {}}
    stage_name = ""
    try:
        for index, stage in enumerate(spec.stages):
            stage_name = stage.name
            marker = _done_marker(paths, stage)
            done = _read_marker(marker, events) if marker.exists() or marker.is_symlink() else None
            if done is not None:
                events.log(f"stage {stage.name} already finished; skipping it")
                summary["stages"][stage.name] = done
                continue
            if any_rank(cancel.is_set()):  # rank-aware (engine/runner/launch.py): all processes stop at the same stage
                raise StageCancelled(stage.name)
            store.update(paths.id, stage=stage.name)
            events.status("running", stage.name, f"stage {index + 1}/{len(spec.stages)}: {stage.kind}",
                          index=index + 1, count=len(spec.stages), plan=stage_plan(spec))
            # Rank-aware (engine/runner/launch.py): under several processes, the kinds the contract's table marks
            # rank_zero_only (evaluate, quantize, export) run on rank 0 only.
            # never 5 s without an event while the stage runs: heartbeats name what runs (engine/core/heartbeat.py)
            heartbeat.attach(events, stage.name, f"stage {index + 1}/{len(spec.stages)} ({stage.kind})")
            result: StageResult | None = run_stage_on_ranks(
                stage.kind, lambda stage=stage: recipe_for(stage.kind).run_stage(ctx_for(stage)))
            if result is None:
                continue
            record = {"kind": stage.kind, "scores": result.scores,
                      "model_dir": str(result.model_dir) if result.model_dir else None}
            if is_main_process():  # rank-aware: only rank 0 writes into the run folder
                marker.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(marker, json.dumps(json_safe(record), indent=2, default=str))
            summary["stages"][stage.name] = record
            if result.scores:
                store.update(paths.id, scores={f"{stage.name}/{k}": v for k, v in result.scores.items()})
        status = "finished"
    except StageCancelled:
        status = "cancelled"
        events.status("cancelled", stage_name, "cancelled; resume with compression-engine run --resume "
                      f"{paths.id}")
    except (EngineError, StoreError) as exc:
        status = "failed"
        events.error(str(exc), stage=stage_name)
    except Exception as exc:  # noqa: BLE001 - any crash becomes one error event, the trace goes to stderr
        status = "failed"
        if out_of_memory.is_out_of_memory(exc):
            hint = cache.get(MEMORY_ADVICE, {}).get(stage_name) or ""
            cache.clear()  # models and data a later stage would reuse: the run is over, reporting needs room
            _report_out_of_memory(exc, spec, stage_name, events, paths, device, hint)
        else:
            _report_crash(exc, stage_name, events, paths)
    summary["elapsed_s"] = round(time.time() - started, 1)
    heartbeat.attach(None, "")  # nothing to beat for once the run is over
    _record_final(store, paths, status)
    events.emit("done", status=status, summary=summary)
    return status


def _report_out_of_memory(exc: BaseException, spec: RunSpec, stage_name: str, events: EventWriter,
                          paths: RunPaths, device: str, hint: str) -> None:
    """One sentence for memory that ran out: the frames holding the tensors are released first (a MemoryError
    would otherwise strike again while the message is built), no traceback (it is not a bug)."""
    out_of_memory.release(exc)
    stage = next((s for s in spec.stages if s.name == stage_name), None)
    if not hint and stage is not None:  # not worked out in preflight (memory check off): try it now
        hint = out_of_memory.advice(spec, stage, device)
    message = out_of_memory.sentence(exc, f"stage {stage_name or 'setup'}", hint, paths.id)
    log.error("%s", message)
    events.error(message, stage=stage_name)


def _report_crash(exc: Exception, stage_name: str, events: EventWriter, paths: RunPaths) -> None:
    """One error event (and one sentence on stderr) for a crash; the trace on stderr only for a bug, not for an
    I/O failure such as a full disk, which the sentence explains."""
    if isinstance(exc, OSError) or "No space left" in str(exc) or "file write failed" in str(exc):
        message = f"stage {stage_name or 'setup'} stopped: {io_sentence(exc)}".replace(
            "RUN_ID", paths.id)
        log.error("%s", message)
        log.debug("the I/O error:\n%s", traceback.format_exc())
        events.error(message, stage=stage_name)
        return
    log.error("stage %s crashed:\n%s", stage_name, traceback.format_exc())
    events.error(f"stage {stage_name or 'setup'} crashed: {type(exc).__name__}: {exc}", stage=stage_name,
                 detail=traceback.format_exc(limit=8))


def _record_final(store: RunStore, paths: RunPaths, status: str) -> None:
    """The final status into run.json, whatever the disk does (write_atomic falls back to an in-place
    rewrite when no new file fits); a failure here is logged, never raised over the run's own error."""
    try:
        store.update(paths.id, status=status)
    except (OSError, StoreError) as exc:
        log.error("could not record status %s in %s: %s", status, paths.info, exc)
