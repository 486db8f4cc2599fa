"""Heartbeats: a ``status`` event every few seconds while something long runs without progress of its own — a
model loading, a GGUF file unpacking, a batch of generation — so the GUI never sits a minute in silence.

The pipeline attaches the stage's event writer (:func:`attach`); code that may take long wraps itself in
``with activity("loading the teacher"):``. While any activity is open, a daemon thread emits
``status(running, stage, "<activity> (<n> s)")`` every :data:`INTERVAL_S` seconds. Without an attached writer
(tests, library use) activities cost nothing.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

INTERVAL_S = 5.0

_lock = threading.Lock()
_target: dict[str, Any] = {"events": None, "stage": ""}
_open: list[tuple[str, float]] = []  # (what, started) of the open activities, innermost last
_thread: threading.Thread | None = None


def attach(events: Any, stage: str) -> None:
    """Send heartbeats to ``events`` (an EventWriter) under ``stage``; ``attach(None, "")`` stops them."""
    with _lock:
        _target.update(events=events, stage=stage)


@contextmanager
def activity(what: str) -> Iterator[None]:
    """Heartbeats naming ``what`` and its elapsed time while the block runs (nested blocks: the innermost)."""
    global _thread
    entry = (what, time.monotonic())
    with _lock:
        _open.append(entry)
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_beat, name="heartbeat", daemon=True)
            _thread.start()
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


def _beat() -> None:
    last = time.monotonic()
    while True:
        time.sleep(min(0.5, INTERVAL_S / 4))
        with _lock:  # emitting under the lock: once attach(None, "") returns, no heartbeat follows (e.g. 'done')
            if not _open or _target["events"] is None:
                continue
            what, started = _open[-1]
            now = time.monotonic()
            if now - max(last, started) < INTERVAL_S:
                continue
            last = now
            try:
                _target["events"].status("running", _target["stage"], f"{what} ({now - started:.0f} s)")
            except Exception:  # noqa: BLE001 - a heartbeat must never take the engine down
                pass
