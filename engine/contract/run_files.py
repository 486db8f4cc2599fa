"""Files of a run folder that must survive faults and hostile contents: read without following links, written
atomically (temporary name, fsync, rename; rewritten in place when the disk is full), and the one-writer lock.

Stdlib only: the studio imports this module (through ``engine.contract.runs``).
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from engine.contract.errors import RunLocked, RunNotFound, StoreError  # noqa: F401 (re-exported)

try:
    import fcntl
except ImportError:  # Windows: no flock; the pid in run.json is the only liveness signal there
    fcntl = None  # type: ignore[assignment]

MAX_TIME = 1e11  # seconds since 1970 (year 5138): a larger time stamp was not written by this store
MAX_RUN_FILE_BYTES = 16 << 20  # run.json, spec.yaml, eval files: small text; anything larger is not ours
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf replaced by None (they are not JSON) and keys made text, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def time_field(value: Any) -> float | None:
    """A time stamp (seconds since 1970) from run.json or the index, or None when it is not a plausible one."""
    value = _finite(value)
    return value if value is not None and 0 <= value < MAX_TIME else None


def _finite(value: Any) -> float | None:
    """``value`` as a finite float when it is a JSON number (not true/false), else None (10**400 included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def clean_scores(scores: Any, run_id: str) -> dict[str, float]:
    """The scores that are scores (text names, finite numbers); anything else is dropped with a warning, so one
    bad value in run.json or the index never breaks a listing that formats them."""
    if not isinstance(scores, dict):
        if scores is not None:
            logging.getLogger(__name__).warning("run %s: scores is %s, not an object of numbers; ignored", run_id,
                                                type(scores).__name__)
        return {}
    numbers = {k: _finite(v) for k, v in scores.items() if isinstance(k, str)}
    clean = {k: v for k, v in numbers.items() if v is not None}
    if len(clean) < len(scores):
        logging.getLogger(__name__).warning("run %s: %d score(s) are not finite numbers; ignored", run_id,
                                            len(scores) - len(clean))
    return clean


def read_inside(path: Path, limit: int = MAX_RUN_FILE_BYTES) -> str:
    """A run file's text, refusing a symbolic link (it could point anywhere) and anything but a small regular
    file. Raises OSError (FileNotFoundError, ELOOP for a link) or UnicodeDecodeError."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not _is_regular(fd):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        # Read what the file holds, not the limit: read(n) reserves n bytes first, and a run failing for want of
        # memory must still be able to read its 1 KB run.json to mark itself failed.
        data = f.read(min(limit, os.fstat(fd).st_size) + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, "file too large", str(path))
    return data.decode("utf-8")


def append_inside(path: Path, text: str) -> None:
    """Append ``text`` to a run file, never through a link and never blocking on a FIFO in its place (O_NONBLOCK;
    anything but a regular file is refused with OSError EINVAL)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _NONBLOCK, 0o644)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        if not _is_regular(fd):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        f.write(text)


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def write_atomic(path: Path, text: str, *, in_place_fallback: bool = False) -> None:
    """Write ``text`` to a fresh temporary file next to ``path`` (never through a link), flush it to disk and
    rename it over ``path``: a reader sees the old or the new file, never half of one. With
    ``in_place_fallback``, when no new file can be written (disk full) the existing file is overwritten in
    place, padded to its old length, so a final status still gets recorded."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    data = text.encode("utf-8")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if not in_place_fallback or not _overwrite_in_place(path, data):
            raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _overwrite_in_place(path: Path, data: bytes) -> bool:
    """Rewrite an existing regular file's blocks without allocating new ones (no truncation first)."""
    try:
        fd = os.open(path, os.O_WRONLY | _NOFOLLOW)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        if len(data) > size:
            data = _compact(data)  # the same JSON without indentation usually fits where the old text was
        if not _is_regular(fd) or len(data) > size:
            return False
        _write_all(fd, data + b" " * (size - len(data)))  # trailing spaces are valid JSON whitespace
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _compact(data: bytes) -> bytes:
    try:
        return json.dumps(json.loads(data), separators=(",", ":")).encode("utf-8")
    except (ValueError, RecursionError):  # our own text: this is only a fallback, never a reason to fail
        return data


class RunLock:
    """The one-writer rule: an OS lock (flock) on ``<run>/lock`` held by the engine for the run's lifetime; the
    kernel drops it when the process dies, however it dies, so a crashed run is resumable at once."""

    def __init__(self, paths: Any) -> None:  # a RunPaths: .id and .lock
        self.paths = paths
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _NONBLOCK
                         | getattr(os, "O_CLOEXEC", 0), 0o644)
        except IsADirectoryError:
            fd = None
        if fd is None or not _is_regular(fd):  # a folder, FIFO or device in its place: flock on it proves nothing
            if fd is not None:
                os.close(fd)
            raise StoreError(f"{self.paths.lock} is not a regular file; remove it (the engine makes a new lock "
                             "file) and try again.")
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pid = _read_pid(fd)
                os.close(fd)
                raise RunLocked(f"run {self.paths.id} is being written by another engine (pid {pid or '?'}); "
                                "wait for it to finish or cancel it first.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @staticmethod
    def holder(paths: Any) -> int | None:
        """The pid of the engine holding the run's lock (0 if unknown), or None when nobody holds it."""
        if fcntl is None:
            return None
        try:
            # O_NONBLOCK: opening a FIFO put in the lock's place for reading would wait for a writer forever
            fd = os.open(paths.lock, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        if not _is_regular(fd):
            os.close(fd)
            return None  # not a lock this store made: nobody holds it
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_pid(fd)
        else:
            return None
        finally:
            os.close(fd)


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (OSError, ValueError):
        return 0
