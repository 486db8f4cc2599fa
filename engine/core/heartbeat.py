"""Heartbeats: a run never goes :data:`INTERVAL_S` seconds without an event, whatever runs — a model loading, a
GGUF file unpacking, teacher targets, one slow training step, a save, an evaluation, the work between two sweep
points — so the GUI never sits a minute in silence and a person can tell a slow run from a hung one.

One watchdog thread per process watches the attached event writer (:func:`attach`, done by the pipeline for each
stage and by the commands that run work outside a pipeline). Whenever the writer has emitted nothing for
:data:`INTERVAL_S` seconds, the watchdog emits ``status(running, stage, "<what> (<n> s)")`` naming what runs now:
the innermost open :func:`activity` (``with activity("loading the teacher"):``), else the stage's current
:func:`phase` (set as code enters it: "training step 3/10, micro-batch 2/4", "saving checkpoint-3") and where
inside it the work is (:func:`detail`: "teacher forward", "loss chunk 3/8"), with how long it has been running.
Any other event resets the clock, so a chatty stage sees no heartbeats at all. Without an attached writer
(tests, library use) activities and phases cost nothing.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

INTERVAL_S = 5.0  # at most this long without an event (the promise to the user is 10 s; half leaves slack)

_lock = threading.Lock()
_target: dict[str, Any] = {"events": None, "stage": "", "phase": ("", 0.0), "detail": ""}
_open: list[tuple[str, float]] = []  # (what, started) of the open activities, innermost last
_thread: threading.Thread | None = None


def attach(events: Any, stage: str, what: str = "") -> None:
    """Watch ``events`` (an EventWriter) under ``stage``, the current phase being ``what`` (default: the stage
    itself); ``attach(None, "")`` stops the heartbeats (no heartbeat follows once it returns)."""
    global _thread
    with _lock:
        default = f"stage {stage}" if stage else ""
        _target.update(events=events, stage=stage, phase=(what or default, time.monotonic()), detail="")
        if events is not None and (_thread is None or not _thread.is_alive()):
            _thread = threading.Thread(target=_watch, name="heartbeat", daemon=True)
            _thread.start()


def phase(what: str) -> None:
    """The attached stage is now doing ``what`` (its clock starts now); a no-op when the text is unchanged."""
    with _lock:
        if _target["phase"][0] != what:
            _target["phase"] = (what, time.monotonic())
            _target["detail"] = ""


def detail(what: str) -> None:
    """Where inside the current phase the work is ("teacher forward", "loss chunk 3/8"): said after the phase,
    whose clock keeps running; cleared by the next :func:`phase`."""
    with _lock:
        _target["detail"] = what


def current() -> str:
    """What a heartbeat would say now (the innermost activity, else the phase), without the time."""
    with _lock:
        return (_open[-1] if _open else _target["phase"])[0]


@contextmanager
def activity(what: str) -> Iterator[None]:
    """Heartbeats name ``what`` and its elapsed time while the block runs (nested blocks: the innermost)."""
    entry = (what, time.monotonic())
    with _lock:
        _open.append(entry)
    try:
        yield
    finally:
        with _lock:
            _open.remove(entry)


@contextmanager
def repeating(beat: Callable[[float], Any], interval_s: float | None = None) -> Iterator[None]:
    """Call ``beat(elapsed_s)`` every ``interval_s`` (default :data:`INTERVAL_S`) on a thread while the block runs:
    for services with their own event shape (the chat service's load progress)."""
    stop = threading.Event()
    started = time.monotonic()

    def run() -> None:
        while not stop.wait(interval_s or INTERVAL_S):
            try:
                beat(time.monotonic() - started)
            except Exception:  # noqa: BLE001 - a heartbeat must never take the engine down
                pass

    thread = threading.Thread(target=run, name="heartbeat-repeating", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=1.0)


def _watch() -> None:
    """The watchdog: wakes a few times per interval and speaks only when the writer has been silent too long."""
    beaten = time.monotonic()  # for writers without ``last_emit``: our own last heartbeat
    while True:
        time.sleep(min(0.5, INTERVAL_S / 4))
        with _lock:  # emitting under the lock: once attach(None, "") returns, no heartbeat follows (e.g. 'done')
            events = _target["events"]
            if events is None:
                continue
            now = time.monotonic()
            last = max(getattr(events, "last_emit", 0.0), beaten)
            if now - last < INTERVAL_S:
                continue
            beaten = now
            what, started = _open[-1] if _open else _target["phase"]
            if not _open and _target.get("detail"):
                what = f"{what}: {_target['detail']}"
            try:
                events.status("running", _target["stage"], f"{what} ({now - started:.0f} s)")
            except Exception:  # noqa: BLE001 - a heartbeat must never take the engine down
                pass
