"""compression-engine: the engine's complete command line. Every run the studio starts can be started here with
the same spec file; stdout carries only JSON-line events, logs and the progress bar go to stderr."""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from engine import __version__
from engine.contract.protocol import (
    EventWriter,
    ProtocolError,
    claim_stdout,
    divert_stderr_to,
    hello,
    io_sentence,
    parse_command,
    read_events,
    reopen_closed_std_streams,
)
from engine.contract.runs import RunLock, RunStore, StoreError, read_inside
from engine.contract.spec import RunSpec, SpecError, build, dump_spec, load_spec

log = logging.getLogger("engine")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(message: str, code: int = 2) -> int:
    """A user error: one sentence on stderr and one error event on stdout, nothing else touched."""
    print(f"error: {message}", file=sys.stderr)  # noqa: T201 - the user's terminal, not a log
    try:
        EventWriter().error(message)
    except OSError:
        pass  # stdout is gone: stderr said it
    return code


class TerminalProgress:
    """A one-line progress bar with ETA on stderr, only when stderr is a terminal."""

    def __call__(self, event) -> None:
        if event.type == "progress":
            d = event.data
            width = 30
            filled = int(width * (d.get("fraction") or 0))
            eta = f"ETA {d['eta_s']:.0f}s" if d.get("eta_s") is not None else ""
            sys.stderr.write(f"\r{d['stage']:<14} [{'#' * filled}{'.' * (width - filled)}] "
                             f"{d['step']}/{d['total']} {eta}   ")
            sys.stderr.flush()
        elif event.type in ("status", "done", "error"):
            sys.stderr.write("\n")


def _listen_for_cancel(cancel: threading.Event) -> None:
    """Read commands from stdin on a daemon thread; ``cancel`` stops the run at the next step."""

    def reader() -> None:
        for line in sys.stdin:
            try:
                command = parse_command(line)
            except ProtocolError as exc:
                log.warning("ignored stdin line: %s", exc)
                continue
            if command["type"] == "cancel":
                log.info("cancel requested")
                cancel.set()

    if sys.stdin is not None and not sys.stdin.closed:
        threading.Thread(target=reader, name="stdin-commands", daemon=True).start()

    def on_sigint(signum, frame):  # first Ctrl-C cancels cleanly (checkpoint saved), the second one kills
        if cancel.is_set():
            raise KeyboardInterrupt
        log.info("interrupted: cancelling at the next step (press Ctrl-C again to stop at once)")
        cancel.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_sigint)


def _is_child() -> bool:
    """One of several processes started by engine/launch.py (the launcher holds the run's lock for them)."""
    return bool(os.environ.get("COMPRESSION_ENGINE_CHILD"))


def execute(spec: RunSpec, *, resume_id: str | None = None, store: RunStore | None = None,
            lock: RunLock | None = None) -> int:
    """Check the spec against models and data, then create (or reopen) the run folder, take its lock (one
    writer per run), stream events and run the pipeline. Exit code: 0 finished, 3 cancelled, 1 failed, 2
    refused before anything started."""
    return _execute(spec, resume_id, store or RunStore(), lock)


def _execute(spec: RunSpec, resume_id: str | None, store: RunStore, lock: RunLock | None) -> int:
    from engine.context import EngineError
    from engine.models import pick_device
    from engine.pipeline import preflight, run_pipeline

    cache: dict = {}
    try:
        device = pick_device(spec.device)
        if device == "cpu" and spec.cpu_threads:
            import torch

            torch.set_num_threads(spec.cpu_threads)
        preflight(spec, device, EventWriter(stream=io.StringIO()), cache)  # nothing to say yet
    except EngineError as exc:
        return _fail(str(exc))
    if resume_id:
        paths = store.paths(resume_id)
        if lock is None and not _is_child():
            lock = RunLock(paths).acquire()
        last_seq = _last_seq(paths.events)
    else:
        paths = store.create(spec.name, dump_spec(spec))
        if not _is_child():
            lock = RunLock(paths).acquire()  # nobody else knows the id yet: this cannot fail
        last_seq = 0
    try:
        return _stream(spec, paths, store, last_seq, device, cache, run_pipeline)
    finally:
        if lock is not None:
            lock.release()


def _last_seq(events_file: Path) -> int:
    """The last sequence number in a run's events.jsonl (0 when there is none or it cannot be read)."""
    try:
        return max((e.seq for _, e in read_events(events_file)), default=0)
    except OSError:
        return 0


def _stream(spec: RunSpec, paths, store: RunStore, last_seq: int, device: str, cache: dict, run_pipeline) -> int:
    events = EventWriter(paths.id, mirror=paths.events, start_seq=last_seq)
    divert_stderr_to(paths.root / "engine.log")  # if the studio goes away, the log goes on in the run folder
    cancel = threading.Event()
    _listen_for_cancel(cancel)  # first: a Ctrl-C from here on cancels the run instead of leaving it "running"
    if os.environ.get("COMPRESSION_ENGINE_CHILD"):
        # One of several processes (engine/launch.py): only rank 0 writes events and run.json; all ranks
        # follow the parent's cancel file.
        from engine.launch import attach_child

        events, store = attach_child(paths, events, store, cancel)
    if sys.stderr.isatty():
        events.listeners.append(TerminalProgress())
    from engine.launch import is_main_process
    from engine.tensorboard_log import attach

    # rank 0 alone writes run files, never through a link out of the run (inside() refuses one)
    board = attach(events, paths.inside(paths.tensorboard.name)) if is_main_process() else None
    hello(events, "run", __version__)
    store.update(paths.id, status="running", pid=os.getpid())
    log.info("run %s in %s", paths.id, paths.root)
    status = run_pipeline(spec, paths, events, store, cancel, device, cache)
    if board is not None:
        board.close()
    events.close()
    log.info("run %s %s; its folder: %s", paths.id, status, paths.root)
    return {"finished": 0, "cancelled": 3}.get(status, 1)


def cmd_run(args: argparse.Namespace) -> int:
    if args.resume and args.spec:  # the spec would be silently ignored: the run's own spec.yaml is resumed
        return _fail(f"give either a spec file or --resume {args.resume}, not both; a resumed run keeps its own "
                     "spec.")
    store = RunStore()
    lock = None
    if args.resume:
        paths = store.paths(args.resume)  # RunNotFound: a sentence (not a run id, or no such run)
        record = store.get(args.resume)
        if record.status == "finished" and not _is_child():
            return _fail(f"run {args.resume} has already finished, so there is nothing to resume; start a new run "
                         f"from its spec (compression-engine run {paths.spec}).")
        linked = [p for p in (paths.spec, paths.events, paths.lock) if p.is_symlink()]
        if linked:  # the store never reads or appends through a link out of a run folder: say so before any work
            return _fail(f"{linked[0]} is a symbolic link; the engine reads and writes only the run's own files, "
                         "so remove the link (or replace it with the file itself).")
        if not _is_child():
            lock = RunLock(paths).acquire()  # refused at once, before any model is loaded, if an engine runs it
        spec_file = paths.spec
    elif args.spec:
        spec_file = Path(args.spec)
    else:
        return _fail("give a spec file (compression-engine run SPEC.yaml) or --resume RUN_ID.")
    try:
        try:
            spec = load_spec(spec_file)
        except SpecError as exc:
            return _fail(str(exc))
        if spec.processes > 1 and not _is_child():
            from engine.launch import launch_distributed

            return launch_distributed(spec_file, spec.processes, args.resume, store=store)
        return execute(spec, resume_id=args.resume, store=store, lock=lock)
    finally:
        if lock is not None:
            lock.release()


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo.pipeline import demo_spec

    spec = demo_spec(quick=args.quick)
    if args.print_spec:
        sys.stderr.write(dump_spec(spec))
        return 0
    return execute(spec)


def _parse_models(pairs: list[str]) -> dict[str, str]:
    models = {}
    for pair in pairs:
        name, sep, source = pair.partition("=")
        if not sep or not name or not source:
            raise SpecError(f"--model {pair!r}: expected NAME=SOURCE, e.g. teacher=./models/teacher_sft.")
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
                 "generation": {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}}
        spec = build(RunSpec, {"name": args.name, "data": data, "stages": [stage], "device": args.device})
    except SpecError as exc:
        return _fail(str(exc))
    return execute(spec)


def cmd_quantize(args: argparse.Namespace) -> int:
    try:
        stage = {"kind": "quantize", "name": "quantize", "model": "student",
                 "quantize": {"quant_type": args.quant_type, "report": not args.no_report}}
        spec = build(RunSpec, {"name": args.name, "student": {"source": args.source},
                               "data": {"preset": args.data, "path": args.data_path or ""}, "stages": [stage],
                               "device": args.device})
    except SpecError as exc:
        return _fail(str(exc))
    return execute(spec)


def _export_source(source: str) -> Path:
    """A model folder, demo:teacher / demo:student, or RUN_ID:STAGE (a stage's saved model in the run store)."""
    if source.startswith("demo:"):  # not a run id 'demo': the demo kit's own model folders
        from engine.context import EngineError
        from engine.models import resolve_source

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


def cmd_export(args: argparse.Namespace) -> int:
    """GGUF export with progress events on stdout (engine/gguf_export.py does the work, all or nothing)."""
    import time

    from engine.context import EngineError, StageCancelled
    from engine.gguf_export import check_exportable, check_output, export_gguf

    formats = [f.strip() for value in (args.format or ["q8_0"]) for f in value.split(",") if f.strip()]
    try:  # a bad source, architecture or format is refused before anything is said or written
        check_output(Path(args.out), args.name or "")
        source = _export_source(args.source)
        check_exportable(source, formats)
    except (EngineError, SpecError) as exc:
        return _fail(str(exc))
    events = EventWriter()
    hello(events, "export", __version__)
    cancel = threading.Event()
    _listen_for_cancel(cancel)
    start = time.perf_counter()

    def on_progress(phase: str, done: int, total: int) -> None:
        if cancel.is_set():
            raise StageCancelled("export")
        events.progress("export", done, total, time.perf_counter() - start, unit="tensor")

    try:
        events.status("running", "export", f"exporting {source} to GGUF ({', '.join(formats)})")
        result = export_gguf(source, Path(args.out), formats, name=args.name or "", ollama=not args.no_modelfile,
                             on_progress=on_progress)
    except StageCancelled:
        events.emit("done", status="cancelled", summary={})
        return 3
    except Exception as exc:  # any failure is one error event; export_gguf removed its files
        log.exception("export failed")
        message = str(exc) if isinstance(exc, EngineError) else f"export failed: {type(exc).__name__}: {exc}"
        events.error(message, stage="export")
        events.emit("done", status="failed", summary={})
        return 1
    for fmt, path in result.files.items():
        events.emit("artifact", stage="export", kind="gguf", format=fmt, path=str(path), bytes=result.sizes[fmt])
    if result.modelfile:
        events.emit("artifact", stage="export", kind="modelfile", path=str(result.modelfile))
    events.emit("done", status="finished", summary={"files": {f: str(p) for f, p in result.files.items()},
                                                    "bytes": result.sizes,
                                                    "elapsed_s": round(time.perf_counter() - start, 1)})
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    store = RunStore()
    if args.action == "list":
        for r in store.list():
            status = r.status if r.status not in ("running", "cancelling") or r.is_alive() else "interrupted"
            scores = ", ".join(f"{k}={v:.3f}" for k, v in r.scores.items() if isinstance(v, float))
            print(f"{r.id}  {status:<11} {r.stage:<14} {scores}")  # noqa: T201 - the command's output
        return 0
    if not args.run_id:
        return _fail(f"`runs {args.action}` needs a run id; `compression-engine runs` lists them.")
    if args.action == "delete":
        store.delete(args.run_id)  # StoreError (not an id, no such run, still running): a sentence
        print(f"deleted {args.run_id}")  # noqa: T201
        return 0
    record = store.get(args.run_id)
    print(json.dumps({**record.__dict__, "path": str(record.path)}, indent=2, default=str))  # noqa: T201
    try:
        print(read_inside(record.path / "eval.md"))  # noqa: T201 - never through a link out of the run
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("eval.md of run %s is unreadable (%s)", record.id, exc)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from engine.context import EngineError
    from engine.models import inspect_model

    try:
        info = inspect_model(args.source)
    except EngineError as exc:
        return _fail(str(exc))
    print(info.to_json())  # noqa: T201 - machine-readable output (engine.contract.model_info)
    return 0


def cmd_preflight(args: argparse.Namespace) -> int:
    """The memory plan of a spec as one JSON object on stdout: every stage's estimated peak by part, whether it
    fits, and the cheapest change that fits. Exit 0 fits, 1 does not fit, 2 bad input."""
    try:  # the flags and the spec are checked before torch is imported (seconds saved on every refusal)
        if args.memory_gb is not None and not 0 < args.memory_gb <= 1e6:  # NaN fails this too
            raise SpecError(f"--memory-gb must be a number of GB above 0 and at most 1e6, got {args.memory_gb}.")
        spec = load_spec(args.spec)
    except SpecError as exc:
        return _fail(str(exc))
    from engine.context import EngineError
    from engine.memory_plan import plan, refusal
    from engine.models import pick_device

    try:
        # planning for a GPU this machine does not have is fine when its memory is given
        device = args.device if args.memory_gb is not None and args.device in ("cuda", "cpu") else \
            pick_device(args.device or spec.device)
        report = plan(spec, device, None if args.memory_gb is None else int(args.memory_gb * 1e9))
    except (SpecError, EngineError) as exc:
        return _fail(str(exc))
    report["refusal"] = refusal(report)
    print(json.dumps(report))  # noqa: T201 - machine-readable output
    return 0 if report["fits"] else 1


PROTOCOL_COMMANDS = ("run", "demo", "eval", "quantize", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compression-engine", description=__doc__)
    parser.add_argument("--version", action="version", version=f"compression-engine {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a spec (YAML or JSON); JSON-line events on stdout")
    p.add_argument("spec", nargs="?", help="the run spec file")
    p.add_argument("--resume", metavar="RUN_ID", help="continue a cancelled or interrupted run where it stopped")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the embedded demo: teacher SFT → student SFT → KD → evaluation, offline")
    p.add_argument("--quick", action="store_true", help="a few steps per stage (a smoke test, not a result)")
    p.add_argument("--print-spec", action="store_true", help="print the demo spec (YAML) and exit")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("eval", help="evaluate models on held-out data: ROUGE-L, exact match, retention")
    p.add_argument("--model", action="append", default=[], metavar="NAME=SOURCE", required=True,
                   help="a model to evaluate (repeat); SOURCE is a folder, hub id, .gguf or demo:teacher")
    p.add_argument("--reference", help="the NAME retention is measured against (default: the first)")
    p.add_argument("--data", default="demo", help="data preset (default demo)")
    p.add_argument("--data-path", help="local data file (for --data local, or a local copy of a preset)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="held-out fraction")
    p.add_argument("--max-samples", type=int, default=200, help="at most this many held-out records")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--name", default="eval")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("quantize", help="4-bit post-training quantization with a before/after report")
    p.add_argument("source", help="model folder, hub id, .gguf file or demo:student")
    p.add_argument("--quant-type", default="nf4", choices=["nf4", "fp4"])
    p.add_argument("--no-report", action="store_true", help="skip the size/speed/quality report")
    p.add_argument("--data", default="demo", help="data preset for the quality part of the report")
    p.add_argument("--data-path", help="local data file")
    p.add_argument("--device", default="auto")
    p.add_argument("--name", default="quantize")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("export", help="GGUF files (f16, q8_0, q4_0, q4_k_m) and an Ollama Modelfile for "
                       "llama.cpp / Ollama / LM Studio")
    p.add_argument("source", help="a model folder, demo:student, or RUN_ID:STAGE for a stage's model in the run "
                   "store")
    p.add_argument("--format", action="append", metavar="FMT",
                   help="f16, q8_0, q4_0 or q4_k_m (repeat or comma-separate; default q8_0)")
    p.add_argument("--out", required=True, help="folder to write the .gguf files and the Modelfile into")
    p.add_argument("--name", help="file name stem (default: the model folder's name)")
    p.add_argument("--no-modelfile", action="store_true", help="skip the Ollama Modelfile")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("runs", help="list, show or delete runs")
    p.add_argument("action", nargs="?", default="list", choices=["list", "show", "delete"])
    p.add_argument("run_id", nargs="?")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("inspect", help="architecture, parameters and vocabulary of a model, without its weights")
    p.add_argument("source")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("preflight", help="estimate every stage's peak memory from the configs (no weights read): "
                       "JSON on stdout; exit 1 when it does not fit")
    p.add_argument("spec", help="the run spec file")
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], help="plan for this device (default: the "
                   "spec's)")
    p.add_argument("--memory-gb", type=float, help="memory available, in GB (default: what the device has free); "
                   "with --device cuda, plans for a GPU this machine need not have")
    p.set_defaults(func=cmd_preflight)

    sub.add_parser("chat", help="the chat service: JSON-line load/generate/stop commands on stdin, tokens out "
                   "(compression-engine chat --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    reopen_closed_std_streams()
    if isinstance(sys.stdin, io.TextIOWrapper):  # one undecodable byte on stdin must cost one command, not the reader
        sys.stdin.reconfigure(errors="replace")
    if argv and argv[0] == "chat":  # the chat service parses its own options (--model, --device, …)
        claim_stdout()
        _setup_logging("-v" in argv)
        from engine.chat import main as chat_main

        try:
            return chat_main(argv[1:])
        except KeyboardInterrupt:  # Ctrl-C ends the service: an exit code, not a traceback
            return 130
    args = build_parser().parse_args(argv)
    if args.command in PROTOCOL_COMMANDS:
        claim_stdout()  # from here on, stdout is JSON lines only
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except StoreError as exc:  # not a run id, no such run, run locked or damaged, data folder unusable
        return _fail(str(exc))
    except BrokenPipeError:  # `runs | head -1`: the reader has what it wanted; say nothing, as `git log` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the interpreter's final flush must not fail again
        return 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left
    except OSError as exc:  # out of space, read-only disk, permissions: a sentence, never a traceback
        log.debug("I/O error", exc_info=True)
        return _fail(io_sentence(exc), code=1)
    except Exception as exc:  # noqa: BLE001 - a bug: one sentence here, the trace only with --verbose
        log.debug("internal error", exc_info=True)
        return _fail(f"internal error: {type(exc).__name__}: {exc} (run with -v for details).", code=1)
