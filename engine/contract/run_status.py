"""A run's status and resume point, said one way for every reader: the engine, the command line (``runs``) and
the studio's history and run watcher all call :func:`run_status` and :func:`has_resume_point`.

``run.json`` stores what the engine last said (:data:`STORED_STATES`); two more statuses are derived when the run
is read: ``interrupted`` (marked running or cancelling, but no engine holds the run any more: it was killed or the
machine went down) and ``damaged`` (its ``run.json`` cannot be read; see engine/contract/runs.py).

The checkpoint layout a resumed run continues from is written here too, so that the studio's "Resume" button and
the engine's resume agree on what counts::

    checkpoints/<stage>/checkpoint-N/complete        written after the trainer finished saving checkpoint-N
    checkpoints/<stage>/<trial>/checkpoint-N/        a learning-rate sweep's trials
    work/<stage>/done.json                           the stage finished (the pipeline skips it on resume)

Stdlib only: the studio imports this module.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from types import SimpleNamespace

from engine.contract.run_files import RunLock

STORED_STATES = ("created", "running", "cancelling", "finished", "cancelled", "failed")
LIVE_STATES = ("running", "cancelling")  # an engine should be working on the run
INTERRUPTED = "interrupted"
DAMAGED = "damaged"
RUN_STATES = (*STORED_STATES, INTERRUPTED, DAMAGED)  # every status a run is shown with
RESUMABLE_STATES = (INTERRUPTED, "failed", "cancelled")  # a run in one of these can be resumed (given a resume point)
ENDED_STATES = ("finished", *RESUMABLE_STATES)  # the run's engine is gone for good

LOCK_FILE = "lock"
COMPLETE_MARKER = "complete"
STAGE_DONE_FILE = "done.json"
CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (a signal-0 probe; someone else's process counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def engine_alive(run_dir: str | Path, stored: str, pid: int) -> bool:
    """Whether the engine that owns a run still runs. The run's lock is the truth where there is one (a reused pid
    cannot fake it); a run without a lock file falls back on its pid."""
    if stored not in LIVE_STATES:
        return False
    lock = Path(run_dir) / LOCK_FILE
    if RunLock.holder(SimpleNamespace(lock=lock)) is not None:
        return True
    return pid_alive(pid) and not lock.exists()


def run_status(run_dir: str | Path, stored: str, pid: int) -> str:
    """The status to show and act on: the stored one, except ``interrupted`` for a run marked live whose engine is
    gone."""
    if stored in LIVE_STATES and not engine_alive(run_dir, stored, pid):
        return INTERRUPTED
    return stored


def checkpoints(folder: str | Path) -> list[Path]:
    """The ``checkpoint-N`` folders under ``folder``, oldest first (links are never followed)."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    numbered = [(int(m[1]), p) for p in entries if (m := CHECKPOINT.fullmatch(p.name)) and p.is_dir()
                and not p.is_symlink()]
    return [p for _, p in sorted(numbered)]


def is_complete(checkpoint: Path, marked_anywhere: bool) -> bool:
    """Marked complete; checkpoints from before markers existed count when the trainer state, which the
    trainer writes after weights, optimizer and RNG states, is there. A checkpoint holding anything but files
    and folders (a FIFO, a device) is never complete: loading it would block, or read forever."""
    if not _plain_tree(checkpoint):
        return False
    if (checkpoint / COMPLETE_MARKER).is_file():
        return True
    return not marked_anywhere and (checkpoint / "trainer_state.json").is_file()


def _plain_tree(folder: Path) -> bool:
    """Whether every entry under ``folder`` is a regular file, a folder or a link (links are not followed)."""
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            try:
                mode = os.lstat(os.path.join(root, name)).st_mode
            except OSError:
                return False
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                return False
    return True


def complete_checkpoints(folder: str | Path) -> list[Path]:
    """The complete ``checkpoint-N`` folders under ``folder``, oldest first."""
    found = checkpoints(folder)
    marked = any((p / COMPLETE_MARKER).is_file() for p in found)
    return [p for p in found if is_complete(p, marked)]


def has_resume_point(run_dir: str | Path) -> bool:
    """Whether a resumed run would carry on rather than start over: a stage finished, or a complete training
    checkpoint exists (of a stage, or of a learning-rate sweep's trial). A half-written one, which the engine
    discards, is no resume point."""
    root = Path(run_dir)
    if any(root.glob(f"work/*/{STAGE_DONE_FILE}")):
        return True
    stages = [p for p in (root / "checkpoints").glob("*/") if not p.is_symlink()]
    return any(complete_checkpoints(folder) for stage in stages for folder in (stage, *stage.glob("*/")))
