"""Several processes (one per GPU) for one run, through ``accelerate launch`` — never a home-made distribution layer.

``compression-engine run SPEC`` with ``processes: N > 1`` calls :func:`launch_distributed` in a light parent
process (it never imports torch). The parent creates the run folder once, then starts::

    python -m accelerate.commands.launch --num_processes N <ddp|fsdp|deepspeed flags> \\
        --module engine run --resume RUN_ID          (each child with COMPRESSION_ENGINE_CHILD=1)

Every child runs the ordinary pipeline on the same run folder; :func:`attach_child` makes it rank-aware: only rank 0
(the main process) writes events, run.json, checkpoints, models and eval files; the other ranks train their shard
and stay silent. The parent relays rank 0's event stream to its stdout (anything else the children print goes to
stderr), so the studio sees one run. A ``cancel`` on the parent's stdin (or Ctrl-C) writes ``<run>/cancel``;
each child polls that file, and :func:`any_rank` makes all ranks stop at the same step (a DDP job whose ranks
stop at different steps would hang in the next all-reduce).

The strategy comes from ``spec.distributed`` when the spec has that field, else ``$COMPRESSION_DISTRIBUTED``:
``ddp`` (default), ``fsdp``, ``deepspeed``, or ``config:/path/to/accelerate_config.yaml`` for a full accelerate
config (``accelerate config`` writes one). On a machine without a GPU, ``ddp`` runs on the gloo backend.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from engine.contract.protocol import Event, EventWriter, ProtocolError, parse_command, protocol_stream
from engine.contract.runs import RunLock, RunPaths, RunStore, read_inside, write_atomic
from engine.contract.streams import command_stdin
from engine.contract.vocabulary import DISTRIBUTED_CONFIG_PREFIX, DISTRIBUTED_STRATEGIES
from engine.core.ranks import is_main_process, rank

log = logging.getLogger(__name__)

CHILD_ENV = "COMPRESSION_ENGINE_CHILD"
STRATEGY_ENV = "COMPRESSION_DISTRIBUTED"
CANCEL_FILE = "cancel"
RANK_ERROR_PREFIX = "rank-error-"  # rank-error-<N>: a silent rank's first error sentence
LAUNCHER_LOG = "launcher.log"  # the accelerate launcher's stderr, kept in the run folder
_STRATEGY_FLAGS = {
    "ddp": ["--multi_gpu"],  # torchrun-style DDP; the children pick NCCL on GPUs, gloo on CPUs
    "fsdp": ["--use_fsdp", "--fsdp_sharding_strategy", "FULL_SHARD", "--fsdp_auto_wrap_policy",
             "TRANSFORMER_BASED_WRAP", "--fsdp_state_dict_type", "FULL_STATE_DICT"],
    "deepspeed": ["--use_deepspeed", "--zero_stage", "2"],
}
FINAL_EXIT = {"finished": 0, "cancelled": 3}  # the same exit codes as a single-process run


class _FollowerStore(RunStore):
    """The run store as the non-main ranks see it: readable, but their updates are dropped (rank 0 owns run.json)."""

    def __init__(self, store: RunStore) -> None:  # share the real store's folders, skip its setup
        self.root, self.runs_dir, self.index_path = store.root, store.runs_dir, store.index_path
        self._index_ok = store._index_ok

    def update(self, run_id: str, **changes: Any):
        return self.get(run_id)


def _watch_cancel_file(path: Path, cancel: threading.Event, interval_s: float = 0.3) -> None:
    def poll() -> None:
        while not cancel.is_set():
            if path.exists():
                log.info("cancel requested (rank %d)", rank())
                cancel.set()
                return
            time.sleep(interval_s)

    threading.Thread(target=poll, name="cancel-file", daemon=True).start()


def attach_child(paths: RunPaths, events: EventWriter, store: RunStore,
                 cancel: threading.Event) -> tuple[EventWriter, RunStore]:
    """Make one of several launched processes rank-aware: pin its GPU, follow the parent's cancel file, and on
    ranks other than 0 replace the event writer and the store by silent ones. Returns (events, store)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if "torch" in sys.modules:  # pick_device ran already, so this costs nothing
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)  # "cuda" now means this rank's GPU for every model it loads
    _watch_cancel_file(paths.root / CANCEL_FILE, cancel)
    if is_main_process():
        return events, store
    events.close()
    silent = EventWriter(paths.id, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - lives as long as this rank
    silent.listeners.append(_error_keeper(paths.root / f"{RANK_ERROR_PREFIX}{rank()}"))
    return silent, _FollowerStore(store)


def _error_keeper(path: Path) -> Any:
    """A listener that keeps a silent rank's first error sentence in the run folder, where the launcher reads it
    if the run dies before rank 0 could say why (torchrun stops every rank when one fails)."""

    def keep(event: Event) -> None:
        if event.type == "error" and not path.exists():
            try:
                write_atomic(path, str(event.data.get("message", "")))
            except OSError as exc:
                log.warning("could not keep rank %d's error in %s: %s", rank(), path, exc)

    return keep


def rank_error(root: Path) -> str:
    """``rank N: <sentence>`` from the first silent rank that kept one, else ""."""
    for path in sorted(root.glob(f"{RANK_ERROR_PREFIX}*")):
        try:
            text = read_inside(path).strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text:
            return f"rank {path.name[len(RANK_ERROR_PREFIX):]}: {text}"
    return ""


# ---- the parent: start accelerate, relay rank 0's events, forward cancel -----------------------------------

def strategy_of(spec: Any = None) -> str:
    """The distributed strategy: ``spec.distributed`` if present, else $COMPRESSION_DISTRIBUTED, else ddp."""
    value = str(getattr(spec, "distributed", "") or os.environ.get(STRATEGY_ENV, "")
                or DISTRIBUTED_STRATEGIES[0]).strip()
    if value not in DISTRIBUTED_STRATEGIES and not value.startswith(DISTRIBUTED_CONFIG_PREFIX):
        raise ValueError(f"distributed strategy {value!r} is not one of {', '.join(DISTRIBUTED_STRATEGIES)} or "
                         f"{DISTRIBUTED_CONFIG_PREFIX}/path/to/accelerate_config.yaml.")
    return value


def visible_gpus() -> int:
    """NVIDIA GPUs this process may use (``nvidia-smi -L``, narrowed by CUDA_VISIBLE_DEVICES), without torch."""
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    count = sum(line.startswith("GPU ") for line in listed.stdout.splitlines()) if listed.returncode == 0 else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return count if visible is None else min(count, len([v for v in visible.split(",") if v.strip()]))


def _free_port() -> int:
    with socket.socket() as s:  # two runs at once must not fight over torchrun's default port
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_command(run_id: str, processes: int, strategy: str = DISTRIBUTED_STRATEGIES[0],
                       port: int | None = None) -> list[str]:
    """The ``accelerate launch`` command line that runs the engine on an existing run folder."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    if strategy.startswith(DISTRIBUTED_CONFIG_PREFIX):
        cmd += ["--config_file", strategy.split(":", 1)[1]]
    else:
        cmd += _STRATEGY_FLAGS[strategy] + ["--num_machines", "1", "--mixed_precision", "no",
                                            "--dynamo_backend", "no"]
    cmd += ["--main_process_port", str(port or _free_port())]
    return cmd + ["--module", "engine", "run", "--resume", run_id]


class _Relay:
    """Copies the children's stdout: events go to ``out`` (in order, once), any other line to stderr."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.hello = False
        self.final: str | None = None
        self.last_seq = 0
        self.error: str | None = None  # rank 0's first error sentence: the one line a failure is summed up by
        self._refusals: set[str] = set()

    def line(self, raw: str) -> None:
        try:
            event = Event.from_json(raw)
        except ProtocolError:
            sys.stderr.write(raw if raw.endswith("\n") else raw + "\n")
            return
        if not event.run_id:  # a refusal before the run started: every rank says it, pass it on once
            if raw in self._refusals:
                return
            self._refusals.add(raw)
        self.hello = self.hello or event.type == "hello"
        self.last_seq = max(self.last_seq, event.seq)
        if event.type == "done":
            self.final = event.data.get("status", "failed")
        if event.type == "error" and self.error is None:
            self.error = str(event.data.get("message", ""))
        try:
            self.out.write(raw if raw.endswith("\n") else raw + "\n")
            self.out.flush()
        except (BrokenPipeError, ValueError):
            pass  # the GUI went away; the run goes on and events.jsonl keeps the record


def _forward_cancel(cancel_file: Path, proc: subprocess.Popen) -> None:
    """stdin ``cancel`` → the cancel file the children poll; the first Ctrl-C likewise, the second stops them."""

    stream = command_stdin()  # unbuffered: a reader still waiting when the run ends must not abort the exit

    def reader() -> None:
        try:
            for line in stream:
                try:
                    if parse_command(line)["type"] == "cancel":
                        cancel_file.touch()
                except ProtocolError as exc:
                    log.warning("ignored stdin line: %s", exc)
        except (OSError, ValueError) as exc:  # stdin closed under us: nothing more will come
            log.warning("stdin unreadable (%s); Ctrl-C still cancels", exc)

    if stream is not None:
        threading.Thread(target=reader, name="stdin-commands", daemon=True).start()

    def on_sigint(signum, frame):
        if cancel_file.exists():
            os.killpg(proc.pid, signal.SIGTERM)
            return
        log.info("interrupted: cancelling at the next step (press Ctrl-C again to stop at once)")
        cancel_file.touch()

    def on_sigterm(signum, frame):  # the studio's terminate: the children live in their own session, pass it on
        os.killpg(proc.pid, signal.SIGTERM)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_sigint)
        signal.signal(signal.SIGTERM, on_sigterm)


def launch_distributed(spec_file: str | Path, processes: int, resume_id: str | None = None,
                       store: RunStore | None = None, out: IO[str] | None = None) -> int:
    """Run a spec under ``accelerate launch`` with ``processes`` processes; returns the run's exit code (0
    finished, 3 cancelled, 1 failed, 2 refused before it started)."""
    from engine.contract.spec import dump_spec, load_spec

    out = out or protocol_stream()  # the real stdout: cli.main() claimed it for events, sys.stdout is stderr now
    store = store or RunStore()
    spec = load_spec(spec_file)
    refused = check_before_launch(spec_file, spec, processes, out)
    if refused:
        return refused
    paths = store.paths(resume_id) if resume_id else store.create(spec.name, dump_spec(spec))
    # One writer per run: the launcher holds the run's lock for all its children (cmd_run already holds it
    # for a resume); the children, started with CHILD_ENV, never take it.
    lock = None if resume_id else RunLock(paths).acquire()
    try:
        return _launch(spec, paths, store, processes, resume_id, out, lock)
    finally:
        if lock is not None:
            lock.release()


def _launch(spec: Any, paths: RunPaths, store: RunStore, processes: int, resume_id: str | None, out: IO[str],
            lock: RunLock | None) -> int:
    (paths.root / CANCEL_FILE).unlink(missing_ok=True)  # a resumed run must not stop at once
    for old in paths.root.glob(f"{RANK_ERROR_PREFIX}*"):  # a resumed run's earlier failures are not this one's
        old.unlink(missing_ok=True)
    try:
        cmd = accelerate_command(paths.id, processes, strategy_of(spec))
    except ValueError as exc:
        return _refuse(paths, store, resume_id, lock, str(exc), out)
    log.info("launching %d processes: %s", processes, " ".join(cmd))
    env = {**os.environ, CHILD_ENV: "1", "PYTHONUNBUFFERED": "1"}
    # Own session: a terminal Ctrl-C reaches only this parent, which turns it into a clean cancel.
    # The launcher's own stderr (torch's ChildFailedError report, accelerate's notes) goes to a file in the run:
    # a failure is told by rank 0's error event, in one sentence, not by a traceback per rank.
    launcher_log = paths.root / LAUNCHER_LOG
    with open(launcher_log, "a", encoding="utf-8") as errors:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, text=True,
                                bufsize=1, env=env, start_new_session=True)
        _forward_cancel(paths.root / CANCEL_FILE, proc)
        relay = _Relay(out)
        for raw in proc.stdout:
            relay.line(raw)
        code = proc.wait()
    if relay.final:
        if relay.final == "failed" and relay.error:
            log.error("%s", relay.error)  # once, from rank 0; the other ranks' reports are in launcher.log
        return FINAL_EXIT.get(relay.final, 1)
    if not relay.hello:
        said = _first_error_line(launcher_log)  # a child's refusal before the run began, said once
        if said:
            log.error("%s", said)
        return _refuse(paths, store, resume_id, lock, "" if code == 2 else
                       f"the engine processes exited (code {code}) before the run started"
                       f"{': ' + said if said else ''}.", out, code=code or 2)
    # The children died mid-run (killed, out of memory, a crash in a collective): say so once, as rank 0 would.
    events = EventWriter(paths.id, out, mirror=paths.events, start_seq=relay.last_seq)
    why = relay.error or rank_error(paths.root)
    events.error(f"the engine processes stopped (exit code {code}) before the run finished"
                 f"{' (' + why + ')' if why else ''}; their report is in {launcher_log}; "
                 f"resume with compression-engine run --resume {paths.id}")
    store.update(paths.id, status="failed")
    events.emit("done", status="failed", summary={})
    events.close()
    return 1


def _first_error_line(path: Path) -> str:
    """The first ``error: …`` sentence a child wrote to stderr (each rank writes the same one), without it."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("error: "):
                    return line[len("error: "):].strip()
    except OSError:
        pass
    return ""


def machine_capacity(spec: Any) -> tuple[int, str]:
    """How many processes this machine can run for ``spec``: one per visible GPU, else one per CPU core the
    process may use (gloo ranks beyond the cores only wait for each other)."""
    gpus = visible_gpus() if spec.device != "cpu" else 0
    if gpus:
        return gpus, "GPUs"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores, "CPU cores"


def check_before_launch(spec_file: str | Path, spec: Any, processes: int, out: IO[str]) -> int:
    """Everything a single-process run checks before its first step, checked once here before any rank starts
    (``compression-engine run --check`` in a short-lived process, so this parent stays free of torch and of a
    CUDA context), then ``processes`` against the machine. Returns 0, or the exit code after one sentence."""
    env = {k: v for k, v in os.environ.items() if k != CHILD_ENV}
    checked = subprocess.run([sys.executable, "-m", "engine", "run", "--check", str(spec_file)], env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, check=False)
    if checked.returncode != 0:  # its sentence went to stderr; its error event is passed on as it came
        for raw in checked.stdout.splitlines():
            _Relay(out).line(raw)
        return checked.returncode
    capacity, what = machine_capacity(spec)
    if processes > capacity:  # two ranks on one GPU fail deep inside NCCL; more gloo ranks than cores crawl
        message = (f"processes: {processes} needs {processes} {what}, but this machine has {capacity}; lower "
                   f"processes to {capacity}{' or set device: cpu' if what == 'GPUs' else ''}.")
        log.error("%s", message)
        EventWriter(stream=out).error(message)
        return 2
    return 0


def _refuse(paths: RunPaths, store: RunStore, resume_id: str | None, lock: RunLock | None, message: str,
            out: IO[str], code: int = 2) -> int:
    """Nothing ran: drop the run folder the parent made (as a single-process refusal never makes one)."""
    if message:
        EventWriter(stream=out).error(message)
    if not resume_id:
        if lock is not None:
            lock.release()  # our own lock would make the store refuse the delete
        store.delete(paths.id)
    return code
