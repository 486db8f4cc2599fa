"""The commands around runs: ``eval``, ``quantize``, ``export``, ``runs``, ``inspect`` and ``preflight``."""
from __future__ import annotations

import argparse
import json
import logging
import threading
from pathlib import Path

from engine.contract.errors import echo
from engine import __version__
from engine.contract.protocol import (
    EventWriter,
    hello,
    io_sentence,
)
from engine.contract.runs import RunStore, StoreError, read_inside
from engine.contract.spec import RunSpec, SpecError, build, load_spec

from engine.cli.common import fail, listen_for_cancel
from engine.cli.run import execute

log = logging.getLogger("engine")
PREFLIGHT_UNKNOWN = 3  # preflight's exit code when a stage's memory cannot be estimated (fits: null)
# one file, the near-lossless one, for a quick export from the command line; a spec's export stage writes
# ExportSpec's default formats
EXPORT_DEFAULT_FORMAT = "q8_0"


def _parse_models(pairs: list[str]) -> dict[str, str]:
    models = {}
    for pair in pairs:
        name, sep, source = pair.partition("=")
        if not sep or not name or not source:
            raise SpecError(f"--model {echo(pair)}: expected NAME=SOURCE, e.g. teacher=./models/teacher_sft.")
        if name in models:  # the second would silently replace the first
            raise SpecError(f"--model {name}=… is given twice; give each model its own name.")
        models[name] = source
    return models


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        models = _parse_models(args.model)
        data = {"preset": args.data, "path": args.data_path or "", "test_fraction": args.test_fraction}
        stage = {"kind": "evaluate", "name": "eval", "models": models,
                 "reference": args.reference or next(iter(models)), "max_eval_samples": args.max_samples,
                 "eval_minutes": args.max_minutes, "draft_samples": args.draft_samples,
                 "generation": {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}}
        spec = build(RunSpec, {"name": args.name, "data": data, "stages": [stage], "device": args.device})
    except SpecError as exc:
        return fail(str(exc))
    return execute(spec)


def cmd_quantize(args: argparse.Namespace) -> int:
    try:
        stage = {"kind": "quantize", "name": "quantize", "model": "student",
                 "quantize": {"quant_type": args.quant_type, "compute_dtype": args.compute_dtype,
                              "report": not args.no_report},
                 "max_eval_samples": args.max_samples, "eval_minutes": args.max_minutes,
                 "generation": {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}}
        spec = build(RunSpec, {"name": args.name, "student": {"source": args.source},
                               "data": {"preset": args.data, "path": args.data_path or "",
                                        "test_fraction": args.test_fraction},
                               "stages": [stage], "device": args.device})
    except SpecError as exc:
        return fail(str(exc))
    return execute(spec)


def _export_source(source: str) -> Path:
    """A model folder, demo:teacher / demo:student, or RUN_ID:STAGE (a stage's saved model in the run store)."""
    if source.startswith("demo:"):  # not a run id 'demo': the demo kit's own model folders
        from engine.core.context import EngineError
        from engine.models.loading import resolve_source

        try:
            return Path(resolve_source(source).location)
        except EngineError as exc:
            raise SpecError(str(exc)) from None
    run_id, sep, stage = source.partition(":")
    if not sep or Path(source).exists():
        return Path(source).expanduser()
    try:
        return RunStore().paths(run_id).model(stage)  # a run id, and a stage folder inside that run
    except StoreError as exc:
        raise SpecError(str(exc)) from None


EXPORT_PARTIAL = 4  # export's exit code when some asked-for formats were written and others could not be


def cmd_export(args: argparse.Namespace) -> int:
    """GGUF export with progress events on stdout (engine/export/gguf.py does the work, all or nothing for the
    formats this machine can write). A .gguf source is de-quantized once through the engine's GGUF cache.
    Exit 0: every format written; 4: some written, the others named in a warning and the summary's ``skipped``."""
    import time

    from engine.core.context import EngineError, StageCancelled
    from engine.export.gguf import export_gguf
    from engine.export.gguf_input import is_gguf, unpacked_source

    overwrite = bool(getattr(args, "overwrite", False))
    try:  # a bad source, architecture, format, --out or a file already there is refused before anything is said
        source, formats, skipped, name = _check_export(args, overwrite)
    except (EngineError, SpecError) as exc:
        return fail(str(exc))
    events = EventWriter()
    hello(events, "export", __version__)
    cancel = threading.Event()
    listen_for_cancel(cancel)
    start = time.perf_counter()

    def on_progress(phase: str, done: int, total: int) -> None:
        if cancel.is_set():
            raise StageCancelled("export")
        events.progress("export", done, total, time.perf_counter() - start, unit="tensor")

    from engine.core import heartbeat

    for sentence in skipped.values():  # said before the work: the person knows at once what will be missing
        events.log(f"export: {sentence} The other formats are written.", level="warning")
    try:
        events.status("running", "export", f"exporting {source} to GGUF ({', '.join(formats)})")
        # a slow tensor (a large embedding quantized to q4_k_m) must not leave the stream silent: heartbeats
        heartbeat.attach(events, "export", f"exporting to GGUF ({', '.join(formats)})")
        try:
            if is_gguf(source):
                events.log(f"export: reading {source.name} through the GGUF cache (unpacked once, then reused)")
                source = unpacked_source(source)
            result = export_gguf(source, Path(args.out), formats, name=name, ollama=not args.no_modelfile,
                                 on_progress=on_progress, overwrite=overwrite)
        finally:
            heartbeat.attach(None, "")
    except StageCancelled:  # export_gguf removed its own partial files, and only those
        events.status("cancelled", "export", "cancelled; no file was written")
        events.emit("done", status="cancelled", summary={})
        return 3
    except Exception as exc:  # noqa: BLE001 - one error event for any failure (_export_failure logs a bug's trace)
        events.error(_export_failure(exc), stage="export")
        events.emit("done", status="failed", summary={})
        return 1
    result.skipped = {**skipped, **result.skipped}
    _announce_export(events, result, time.perf_counter() - start)
    return EXPORT_PARTIAL if result.skipped else 0


def _check_export(args: argparse.Namespace, overwrite: bool) -> tuple[Path, list[str], dict[str, str], str]:
    """Everything checkable before the first event: (source, writable formats, skipped formats, file name stem).
    A GGUF source is checked from its header here; its unpack comes after the first event."""
    from engine.export.gguf import check_exportable, check_output, check_targets, split_formats
    from engine.export.gguf_input import check_gguf_source, gguf_export_name, is_gguf

    formats = [f.strip() for value in (args.format or [EXPORT_DEFAULT_FORMAT]) for f in value.split(",") if f.strip()]
    check_output(Path(args.out), args.name or "")
    source = _export_source(args.source)
    formats, skipped = split_formats(list(dict.fromkeys(formats)))
    if is_gguf(source):
        check_gguf_source(source)
        name = gguf_export_name(source, args.name or "")
    else:
        check_exportable(source, formats)
        name = args.name or ""
    check_targets(source, Path(args.out), formats, name=name, ollama=not args.no_modelfile, overwrite=overwrite)
    return source, formats, skipped, name


def _export_failure(exc: Exception) -> str:
    """The sentence for a failed export: the EngineError's own, an I/O failure's (no trace unless --verbose), or
    the exception's type and text for a bug (its trace logged)."""
    from engine.core.context import EngineError

    if isinstance(exc, EngineError):
        return str(exc)
    if isinstance(exc, OSError):  # a full disk, a folder gone
        log.debug("export failed", exc_info=True)
        return f"export failed: {io_sentence(exc)}"
    log.exception("export failed")
    return f"export failed: {type(exc).__name__}: {exc}"


def _announce_export(events: EventWriter, result, elapsed_s: float) -> None:
    """One artifact event per file written, then done with the files and their sizes."""
    for fmt, path in result.files.items():
        events.emit("artifact", stage="export", kind="gguf", format=fmt, path=str(path), bytes=result.sizes[fmt])
    if result.modelfile:
        events.emit("artifact", stage="export", kind="modelfile", path=str(result.modelfile))
    summary = {"files": {f: str(p) for f, p in result.files.items()}, "bytes": result.sizes,
               "elapsed_s": round(elapsed_s, 1)}
    if result.skipped:  # format → why it was not written and what to install (the studio's export dialog shows it)
        summary["skipped"] = result.skipped
    events.emit("done", status="finished", summary=summary)


def number_text(value: float) -> str:
    """A number with four significant digits in whichever notation keeps them: 0.8713, 12.5, 5e-05 (a fixed
    three decimals printed a learning rate of 5e-05 as 0.000)."""
    return f"{value:.4g}"


def cmd_runs(args: argparse.Namespace) -> int:
    store = RunStore()
    if args.action == "list":
        for r in store.list():
            status = r.current_status()
            scores = ", ".join(f"{k}={number_text(v)}" for k, v in r.scores.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool))
            print(f"{r.id}  {status:<11} {r.stage:<14} {scores}")  # noqa: T201 - the command's output
        return 0
    if not args.run_id:
        return fail(f"`runs {args.action}` needs a run id; `compression-engine runs` lists them.")
    if args.action == "delete":
        store.delete(args.run_id)  # StoreError (not an id, no such run, still running): a sentence
        print(f"deleted {args.run_id}")  # noqa: T201 - the command's output
        return 0
    record = store.get(args.run_id)
    print(json.dumps({**record.__dict__, "path": str(record.path)}, indent=2, default=str))  # noqa: T201 - output
    try:
        print(read_inside(record.path / "eval.md"))  # noqa: T201 - never through a link out of the run
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("eval.md of run %s is unreadable (%s)", record.id, exc)
    return 0


def _with_tokenizer(info):
    """The inspected model with its tokenizer's vocabulary digest (the wizard's KD pairing); without it when the
    tokenizer cannot be read (the run's preflight then says why)."""
    from engine.contract.spec import ModelSpec
    from engine.core.context import EngineError
    from engine.models.loading import load_tokenizer
    from engine.models.pairing import with_tokenizer

    try:
        return with_tokenizer(info, load_tokenizer(ModelSpec(source=info.source)))
    except (EngineError, OSError, ValueError) as exc:
        logging.getLogger(__name__).info("no tokenizer for %s: %s", info.source, exc)
        return info


def cmd_inspect(args: argparse.Namespace) -> int:
    from engine.core.context import EngineError
    from engine.models.inspection import inspect_model

    try:
        info = inspect_model(args.source)
    except EngineError as exc:
        return fail(str(exc))
    info = _with_tokenizer(info)
    print(info.to_json())  # noqa: T201 - machine-readable output (engine.contract.model_info)
    return 0


def cmd_preflight(args: argparse.Namespace) -> int:
    """The memory plan of a spec as one JSON object on stdout: every stage's estimated peak by part, whether it
    fits, and the cheapest change that fits. Exit 0 fits, 1 does not fit, 2 bad input, 3 unknown (a stage could
    not be estimated: ``fits`` is null and ``unknown`` says why)."""
    try:  # the flags and the spec are checked before torch is imported (seconds saved on every refusal)
        if args.memory_gb is not None and not 0 < args.memory_gb <= 1e6:  # NaN fails this too
            raise SpecError(f"--memory-gb must be a number of GB above 0 and at most 1e6, got {args.memory_gb}.")
        spec = load_spec(args.spec)
    except SpecError as exc:
        return fail(str(exc))
    from engine.core.context import EngineError
    from engine.models.memory_plan import plan
    from engine.models.memory_sentences import refusal
    from engine.models.loading import pick_device

    try:
        # planning for a GPU this machine does not have is fine when its memory is given
        device = args.device if args.memory_gb is not None and args.device in ("cuda", "cpu") else \
            pick_device(args.device or spec.device)
        report = plan(spec, device, None if args.memory_gb is None else int(args.memory_gb * 1e9))
    except (SpecError, EngineError) as exc:
        return fail(str(exc))
    report["refusal"] = refusal(report)
    _say_offline(spec, report)
    print(json.dumps(report))  # noqa: T201 - machine-readable output
    if report["fits"] is None:
        log.warning("%s", report["unknown"])
        return PREFLIGHT_UNKNOWN
    return 0 if report["fits"] else 1


def _say_offline(spec: RunSpec, report: dict) -> None:
    """Offline, the plan may rest on the published configs of hub models whose weights are not here: say so in
    the report, in the words ``inspect`` and ``run`` use for the same models."""
    import re

    from engine.models.hub_access import known_offline, offline_reason, unreadable_hub_ids

    sources = sorted({spec.teacher.source, spec.student.source}
                     | {r for s in spec.stages for r in s.model_refs().values()})
    hub_ids = [s for s in sources if re.fullmatch(r"[\w.-]+/[\w.-]+", s) and not Path(s).expanduser().exists()]
    if hub_ids and (known_offline() or offline_reason()):
        report["offline"] = known_offline()
        report["warnings"] = unreadable_hub_ids(hub_ids)
