"""The engine's stdout and stderr outlive their reader (stdlib only).

The studio may close, crash or be killed while a run goes on, and the terminal it was started from may close.
Then the engine's stdout/stderr pipes (or terminal) have nobody at the other end, and the next write fails with
EPIPE — a run must not die of that. Each stream is a :class:`SurvivingStream`: as soon as its reader hangs up
(a watcher thread blocked in ``poll`` sees POLLERR/POLLHUP) or, at the latest, at the first failed write, its
file descriptor is pointed at a fallback with dup2 — the run folder's engine.log for stderr, /dev/null for the
protocol stream (its events are in events.jsonl anyway). Python writers, C extensions and Rust libraries that
write to the descriptor directly (some abort on EPIPE) and the interpreter's final flush all carry on there.
"""
from __future__ import annotations

import errno
import io
import os
import stat
import sys
import threading
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import IO, Any


class SurvivingStream:
    """A text stream whose descriptor (and ``also_fds``, descriptors that share its pipe) is diverted to
    ``fallback`` (None: /dev/null) once its reader is gone; the text that failed is still in the stream's buffer
    and follows."""

    def __init__(self, stream: IO[str], fallback: Path | None = None, also_fds: tuple[int, ...] = ()) -> None:
        self._stream = stream
        self.fallback = fallback
        self.also_fds = also_fds
        self.diverted = False
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            self.divert()
            self.flush()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            if not self.diverted:
                self.divert()
                self.flush()

    def divert(self, target: Path | None = None) -> None:
        """Point the descriptors at ``target`` (default: the fallback); once, unless a target is given."""
        with self._lock:
            if self.diverted and target is None:
                return
            path = str(target or self.fallback or os.devnull)
            try:
                # never through a link planted in the run folder (the store follows no links out of a run)
                # and never blocking on a FIFO put in its place (O_NONBLOCK; anything but a regular file or
                # /dev/null is refused): the run goes on, its log goes nowhere
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                             | getattr(os, "O_NONBLOCK", 0), 0o644)
                if not stat.S_ISREG(os.fstat(fd).st_mode) and path != os.devnull:
                    os.close(fd)
                    raise OSError(errno.EINVAL, "not a regular file", path)
                os.set_blocking(fd, True)
                for target_fd in (self._stream.fileno(), *self.also_fds):
                    os.dup2(fd, target_fd)
                os.close(fd)
            except (OSError, ValueError, io.UnsupportedOperation):
                self._stream = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives with the process
            self.diverted = True  # only now: a reader of the flag may write to the descriptors at once

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, … of the wrapped stream
        return getattr(self._stream, name)


def watch_readers(streams: list[SurvivingStream]) -> None:
    """Divert each stream the moment its reader hangs up, from a daemon thread blocked in ``poll`` (a pipe's write
    end reports POLLERR when the read end closes, a terminal POLLHUP when it goes away; a file never does)."""
    import select

    if not hasattr(select, "poll"):
        return  # Windows: the first failed write diverts
    poller, by_fd = select.poll(), {}
    for stream in streams:
        try:
            by_fd[stream.fileno()] = stream
        except (OSError, ValueError, io.UnsupportedOperation):
            continue
    for fd in by_fd:
        poller.register(fd, 0)  # errors and hang-ups are reported whatever the mask

    def run() -> None:
        while by_fd:
            for fd, _event in poller.poll():
                poller.unregister(fd)
                stream = by_fd.pop(fd, None)
                if stream is not None:
                    stream.divert()

    threading.Thread(target=run, name="reader-watch", daemon=True).start()


_protocol_stream: IO[str] | None = None


def reopen_closed_std_streams() -> None:
    """A standard descriptor the caller closed (``>&-``, ``2>&-``, a parent that daemonised us) becomes
    /dev/null, as daemons do it: otherwise sys.stdout is None and the first event or sentence fails, and the
    next file the engine opens would silently take descriptor 1 and receive its output."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)  # the lowest free: ``fd``
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
        if getattr(sys, name) is None:
            # no `with` (SIM115): sys.stdin/stdout/stderr own the stream for the process's life
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", encoding="utf-8", closefd=False,  # noqa: SIM115
                                    buffering=-1 if fd == 0 else 1))


def claim_stdout() -> IO[str]:
    """Reserve the real stdout for protocol events and send everything else that writes to it (library prints,
    progress bars, C extensions) to stderr, so stdout carries nothing but JSON lines; both survive their reader
    (see the module's docstring). Idempotent."""
    global _protocol_stream
    if _protocol_stream is None:
        sys.stdout.flush()
        fd = os.dup(1)
        os.dup2(2, 1)
        # a SurvivingStream quacks like IO[str] (write, flush, fileno…) without inheriting from it
        _protocol_stream = SurvivingStream(os.fdopen(fd, "w", buffering=1, encoding="utf-8"))  # type: ignore[assignment]
        if not isinstance(sys.stderr, SurvivingStream):
            sys.stderr = SurvivingStream(sys.stderr, also_fds=(1,))  # fd 1 is a copy
        sys.stdout = sys.stderr
        watch_readers([_protocol_stream, sys.stderr])  # type: ignore[list-item]
    assert _protocol_stream is not None  # set above, never unset
    return _protocol_stream


def divert_stderr_to(path: Path) -> None:
    """Where stderr (logs, tracebacks) goes once nobody reads it: the run folder's log file (if nobody has been
    reading it since before the run folder existed, from now on)."""
    if isinstance(sys.stderr, SurvivingStream):
        sys.stderr.fallback = Path(path)
        if sys.stderr.diverted:
            sys.stderr.divert(Path(path))


def protocol_stream() -> IO[str]:
    """Where events go by default: the claimed stdout, or plain stdout when nothing claimed it (tests)."""
    return _protocol_stream if _protocol_stream is not None else sys.stdout



def command_stdin() -> Iterable[bytes] | None:
    """stdin's lines for a daemon thread that reads commands until the process ends, read from descriptor 0.

    Python's buffered ``sys.stdin`` holds a lock while its reader waits; when the run ends with that daemon thread
    still waiting, the interpreter cannot take the lock at shutdown and aborts ("Fatal Python error:
    _enter_buffered_busy", exit status 134) after a run that succeeded. ``os.read`` takes no such lock. None
    when there is no stdin; a stand-in without a descriptor (a test's) is read as it is."""
    if sys.stdin is None or sys.stdin.closed:
        return None
    try:
        fd = sys.stdin.fileno()
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both
        stand_in: Any = getattr(sys.stdin, "buffer", None) or sys.stdin  # a text stand-in has no .buffer
        return stand_in
    return _descriptor_lines(fd)


def _descriptor_lines(fd: int) -> Iterator[bytes]:
    """The lines read from ``fd`` in chunks (not a byte per call: a 50,000-byte bad line must not delay the
    cancel after it), the last one even without its newline."""
    pending = b""
    while chunk := os.read(fd, 65536):
        *lines, pending = (pending + chunk).split(b"\n")
        yield from (line + b"\n" for line in lines)
    if pending:
        yield pending
