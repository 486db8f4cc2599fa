"""``compression-engine run`` and ``demo``: check a spec, create or reopen its run folder under the one-writer
lock, and stream the pipeline's events (a resumed run continues its sequence numbers)."""
from __future__ import annotations

import argparse
import io
import logging
import os
import stat
import sys
import threading
from pathlib import Path

from engine import __version__
from engine.contract.protocol import (
    EventWriter,
    divert_stderr_to,
    hello,
    read_events,
)
from engine.contract.runs import RunLock, RunStore
from engine.contract.spec import RunSpec, SpecError, dump_spec, load_spec

from engine.cli.common import TerminalProgress, fail, listen_for_cancel

log = logging.getLogger("engine")


def _is_child() -> bool:
    """One of several processes started by engine/runner/launch.py (the launcher holds the run's lock for them)."""
    return bool(os.environ.get("COMPRESSION_ENGINE_CHILD"))


def execute(spec: RunSpec, *, resume_id: str | None = None, store: RunStore | None = None,
            lock: RunLock | None = None) -> int:
    """Check the spec against models and data, then create (or reopen) the run folder, take its lock (one
    writer per run), stream events and run the pipeline. Exit code: 0 finished, 3 cancelled, 1 failed, 2
    refused before anything started."""
    return _execute(spec, resume_id, store or RunStore(), lock)


def _execute(spec: RunSpec, resume_id: str | None, store: RunStore, lock: RunLock | None) -> int:
    from engine.core.context import EngineError
    from engine.runner.pipeline import run_pipeline

    try:
        device, cache = checked(spec)
    except EngineError as exc:
        return fail(str(exc))
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


def _is_special(path: Path) -> bool:
    """Whether something other than a regular file or a link (refused on its own) stands at ``path``."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return False  # missing: the engine makes it
    return not (stat.S_ISREG(mode) or stat.S_ISLNK(mode))


def checked(spec: RunSpec) -> tuple[str, dict]:
    """The device and what preflight loaded, once everything checkable before the first step holds; raises
    EngineError with the sentence otherwise (nothing is created)."""
    from engine.models.loading import pick_device
    from engine.runner.pipeline import preflight

    cache: dict = {}
    device = pick_device(spec.device)
    if device == "cpu" and spec.cpu_threads:
        import torch

        torch.set_num_threads(spec.cpu_threads)
    preflight(spec, device, EventWriter(stream=io.StringIO()), cache)  # nothing to say yet
    return device, cache


def _check_only(spec: RunSpec) -> int:
    """``run --check``: the verdict of the pre-run check alone (the launcher of several processes asks for it)."""
    from engine.core.context import EngineError

    try:
        checked(spec)
    except EngineError as exc:
        return fail(str(exc))
    log.info("%s: the spec, its models and its data pass every check made before a run starts", spec.name)
    return 0


def _last_seq(events_file: Path) -> int:
    """The last sequence number in a run's events.jsonl, over its valid lines (bad ones are skipped with a
    warning by read_events); 0 when there is none. A file that cannot be read at all (a FIFO in its place,
    no permission) is not silently restarted at 0: the OSError says which file."""
    try:
        return max((e.seq for _, e in read_events(events_file)), default=0)
    except FileNotFoundError:
        return 0


def _stream(spec: RunSpec, paths, store: RunStore, last_seq: int, device: str, cache: dict, run_pipeline) -> int:
    events = EventWriter(paths.id, mirror=paths.events, start_seq=last_seq)
    divert_stderr_to(paths.root / "engine.log")  # if the studio goes away, the log goes on in the run folder
    cancel = threading.Event()
    listen_for_cancel(cancel)  # first: a Ctrl-C from here on cancels the run instead of leaving it "running"
    if os.environ.get("COMPRESSION_ENGINE_CHILD"):
        # One of several processes (engine/runner/launch.py): only rank 0 writes events and run.json; all ranks
        # follow the parent's cancel file.
        from engine.runner.launch import attach_child

        events, store = attach_child(paths, events, store, cancel)
    if sys.stderr.isatty():
        events.listeners.append(TerminalProgress())
    from engine.core.ranks import is_main_process
    from engine.runner.tensorboard_log import attach

    # rank 0 alone writes run files, never through a link out of the run (inside() refuses one)
    board = attach(events, paths.inside(paths.tensorboard.name)) if is_main_process() else None
    hello(events, "run", __version__)
    from engine.core import heartbeat

    heartbeat.attach(events, "", "starting the run")  # the pipeline names each stage; it detaches at the end
    from engine.models.hub_access import known_offline

    if known_offline():  # found while checking the spec's hub models: said once, not a retry per look-up
        events.log(f"offline ({known_offline()}): hub models are read from the local Hugging Face cache only",
                   "warning")
    store.update(paths.id, status="running", pid=os.getpid())
    log.info("run %s in %s", paths.id, paths.root)
    try:
        status = run_pipeline(spec, paths, events, store, cancel, device, cache)
    except Exception as exc:  # noqa: BLE001 - the pipeline's own handler failed (memory ran out again while
        heartbeat.attach(None, "")  # it reported): run.json must still end, never "running"; no beat after it
        status = _escaped(exc, paths, store, events)
    finally:
        heartbeat.attach(None, "")  # whatever ended the run, no heartbeat follows its last event
    if board is not None:
        board.close()
    events.close()
    log.info("run %s %s; its folder: %s", paths.id, status, paths.root)
    return {"finished": 0, "cancelled": 3}.get(status, 1)


def _escaped(exc: Exception, paths, store: RunStore, events: EventWriter) -> str:
    """Last resort for a failure that escaped run_pipeline: mark the run failed, then say so if still possible."""
    from engine.models import out_of_memory

    if out_of_memory.is_out_of_memory(exc):
        out_of_memory.release(exc)
        message = out_of_memory.sentence(exc, "the run", run_id=paths.id)
    else:
        log.error("the pipeline crashed", exc_info=exc)
        message = f"the run crashed: {type(exc).__name__}: {str(exc)[:300]}"
    try:
        store.update(paths.id, status="failed")
    except Exception as again:  # noqa: BLE001 - nothing more can be done; the pid check calls it interrupted
        log.error("could not record the run as failed: %s", again)
    try:
        events.error(message)
        events.emit("done", status="failed", summary={})
    except Exception:  # noqa: BLE001 - stdout and the mirror gone too: stderr is the last witness
        log.error("%s", message)
    return "failed"


def cmd_run(args: argparse.Namespace) -> int:
    check = getattr(args, "check", False)  # callers in-process (tests, tools) build a Namespace without --check
    if check and not args.spec:
        return fail("run --check needs a spec file (compression-engine run --check SPEC.yaml).")
    if args.resume and args.spec:  # the spec would be silently ignored: the run's own spec.yaml is resumed
        return fail(f"give either a spec file or --resume {args.resume}, not both; a resumed run keeps its own "
                     "spec.")
    store = RunStore()
    lock = None
    if args.resume:
        paths = store.paths(args.resume)  # RunNotFound: a sentence (not a run id, or no such run)
        record = store.get(args.resume)
        if record.status == "finished" and not _is_child():
            return fail(f"run {args.resume} has already finished, so there is nothing to resume; start a new run "
                         f"from its spec (compression-engine run {paths.spec}).")
        linked = [p for p in (paths.spec, paths.events, paths.lock) if p.is_symlink()]
        if linked:  # the store never reads or appends through a link out of a run folder: say so before any work
            return fail(f"{linked[0]} is a symbolic link; the engine reads and writes only the run's own files, "
                         "so remove the link (or replace it with the file itself).")
        special = next((p for p in (paths.spec, paths.events, paths.lock, paths.info, paths.eval_json,
                                    paths.eval_md, paths.root / "engine.log", paths.root / "launcher.log")
                        if _is_special(p)), None)
        if special is not None:  # a FIFO would hang the replay, a device feed it forever: refuse, open nothing
            return fail(f"{special} is not a regular file (a folder, FIFO or device stands in its place); the "
                        "engine reads and writes only plain files in a run, so remove it (or put the file back).")
        if not _is_child():
            lock = RunLock(paths).acquire()  # refused at once, before any model is loaded, if an engine runs it
        spec_file = paths.spec
    elif args.spec:
        spec_file = Path(args.spec)
    else:
        return fail("give a spec file (compression-engine run SPEC.yaml) or --resume RUN_ID.")
    try:
        try:
            spec = load_spec(spec_file)
        except SpecError as exc:
            return fail(str(exc))
        if check:
            return _check_only(spec)
        if spec.processes > 1 and not _is_child():
            from engine.runner.launch import launch_distributed

            return launch_distributed(spec_file, spec.processes, args.resume, store=store)
        return execute(spec, resume_id=args.resume, store=store, lock=lock)
    finally:
        if lock is not None:
            lock.release()


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo.pipeline import cross_tokenizer_demo_spec, demo_spec

    make = cross_tokenizer_demo_spec if getattr(args, "cross_tokenizer", False) else demo_spec
    spec = make(quick=args.quick)
    if args.print_spec:
        sys.stderr.write(dump_spec(spec))
        return 0
    return execute(spec)
