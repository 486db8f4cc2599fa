"""The JSON-lines protocol between the engine and the studio (stdlib only; the studio imports it).

Engine → studio, one event per stdout line (and mirrored to the run's ``events.jsonl``)::

    {"v": 1, "type": "metric", "run_id": "...", "seq": 7, "time": 1732860000.5, "data": {...}}

Event ``data`` by type: one TypedDict each in :mod:`engine.contract.events` (hello, status, progress, metric,
log, sample, artifact, error, done; the chat service's token, loaded, score).

Studio → engine, one command per stdin line: ``{"type": "cancel"}``; for the chat service also
``{"type": "generate", ...}``, ``{"type": "stop", ...}``, ``{"type": "load", ...}``, ``{"type": "quit"}``,
``{"type": "score", "id": ..., "prediction": ..., "reference": ...}``.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from collections.abc import Callable, Iterator

from engine.contract.errors import ProtocolError  # re-exported
from engine.contract.events import PAYLOADS, STRICT_ENV, payload_problems
from engine.contract.safe_json import JSONProblem, safe_json_loads, shorten, unencodable
from engine.contract.streams import (SurvivingStream, claim_stdout, divert_stderr_to,  # noqa: F401 (re-exported)
                                     protocol_stream, reopen_closed_std_streams)

PROTOCOL_VERSION = 1
EVENT_TYPES = tuple(PAYLOADS)
FINAL_STATES = ("finished", "cancelled", "failed")
COMMAND_TYPES = ("cancel", "generate", "stop", "load", "unload", "quit", "score")
MAX_ERROR_CHARS = 1000  # an error sentence longer than this echoes something it should have cut
MAX_EVENT_LINE = 16 << 20  # bytes; the largest event (a sample with a long answer) is a few KB
MAX_SEQ = 2**63 - 1  # what SQLite and every reader of a seq can hold
MAX_TIME = 1e11  # seconds since 1970: year 5138; a larger stamp is not a time this engine wrote



@dataclass
class Event:
    type: str
    data: dict = field(default_factory=dict)
    run_id: str = ""
    seq: int = 0
    time: float = 0.0
    v: int = PROTOCOL_VERSION

    def to_json(self) -> str:
        """One JSON line; never fails on content: NaN/inf become null, unknown objects their text."""
        obj = {"v": self.v, "type": self.type, "run_id": self.run_id, "seq": self.seq, "time": self.time,
               "data": self.data}
        try:
            line = json.dumps(obj, ensure_ascii=False, default=_jsonable, allow_nan=False)
        except (ValueError, TypeError, RecursionError):  # a non-finite number somewhere (a summary, a sample)
            line = json.dumps(_json_safe(obj), ensure_ascii=False, default=str, allow_nan=False)
        if unencodable(line) is not None:  # a lone surrogate echoed from input: \\ud800 escapes stay valid JSON
            line = json.dumps(_json_safe(obj), ensure_ascii=True, default=str, allow_nan=False)
        return line

    @classmethod
    def from_json(cls, line: str | bytes) -> Event:
        """An event from one JSON line; ProtocolError (a short reason) for anything that is not one, field types
        included: a replayed or resumed events file may hold any bytes, and one bad line must stay one line."""
        try:
            obj = safe_json_loads(line)
        except JSONProblem as exc:
            raise ProtocolError(f"the line {exc}.") from None
        if not isinstance(obj, dict) or obj.get("type") not in EVENT_TYPES:
            raise ProtocolError(f"not an event: {shorten(line, 80)!r}.")
        data = obj.get("data", {})
        if not isinstance(data, dict):
            raise ProtocolError("event data must be an object.")
        seq, stamp, version = obj.get("seq", 0), obj.get("time", 0.0), obj.get("v", PROTOCOL_VERSION)
        if not _whole(seq, MAX_SEQ):
            raise ProtocolError(f"event seq must be a whole number from 0 to {MAX_SEQ}, got {shorten(seq, 40)!r}.")
        if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not 0 <= stamp < MAX_TIME:
            raise ProtocolError(f"event time must be seconds since 1970, got {shorten(stamp, 40)!r}.")
        if not _whole(version, 1 << 16):
            raise ProtocolError(f"event v must be a protocol version number, got {shorten(version, 40)!r}.")
        run_id = obj.get("run_id", "")
        if not isinstance(run_id, str):
            raise ProtocolError(f"event run_id must be text, got {shorten(run_id, 40)!r}.")
        return cls(type=obj["type"], data=data, run_id=run_id, seq=seq, time=float(stamp), v=version)


def _whole(value: Any, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


def _jsonable(value: Any) -> Any:
    """JSON fallback for paths, numpy/torch scalars and the like."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON data: NaN/inf → null, numpy/torch scalars → numbers, keys → text, and anything
    nested absurdly deep (or circular) → its text."""
    if depth > 64:
        return str(value)[:200]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v, depth + 1) for v in value]
    try:
        plain = _jsonable(value)
    except Exception:  # noqa: BLE001 - a foreign object's .item() may raise anything; its text will do
        return str(value)
    return _json_safe(plain, depth + 1) if not isinstance(plain, type(value)) else str(plain)


def _finite(values: dict) -> dict:
    """NaN/inf are not JSON: send them as null so one bad step cannot break the stream."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


class EventWriter:
    """Writes events as JSON lines to a stream (stdout) and appends them to a mirror file (events.jsonl).

    Thread-safe: trainer callbacks, the stdin reader and generation threads may all emit.
    """

    def __init__(self, run_id: str = "", stream: IO[str] | None = None, mirror: Path | None = None,
                 start_seq: int = 0) -> None:
        self.run_id = run_id
        self.stream = stream if stream is not None else protocol_stream()
        self.mirror = Path(mirror) if mirror else None
        self._seq = start_seq
        self._lock = threading.Lock()
        self._mirror_file = None
        self.mirror_failed = False
        self.listeners: list[Callable[[Event], None]] = []  # e.g. the terminal progress bar
        self.last_emit = time.monotonic()  # when the last event went out (the heartbeat watchdog reads it)
        if self.mirror:
            self._mirror_file = open_mirror(self.mirror)

    def emit(self, type_: str, **data: Any) -> Event:
        if type_ not in EVENT_TYPES:
            raise ProtocolError(f"unknown event type {type_!r}.")
        if os.environ.get(STRICT_ENV) == "1" and (problem := payload_problems(type_, data, required=False)):
            raise ProtocolError(problem)  # the test suite's check that every event keeps the contract
        with self._lock:
            self._seq += 1
            event = Event(type=type_, data=data, run_id=self.run_id, seq=self._seq, time=round(time.time(), 3))
            line = event.to_json()
            self.last_emit = time.monotonic()
            if self._mirror_file:
                self._append_mirror(line)
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # the GUI went away; the run goes on and events.jsonl keeps the record
        for listener in self.listeners:
            listener(event)
        return event

    def _append_mirror(self, line: str) -> None:
        """Append to events.jsonl; a failing disk (full, gone) must not turn an event into a crash: the line
        still goes to stdout, and the mirror is retried at the next event (a half-written line is repaired by
        the next writer)."""
        mirror = self._mirror_file
        assert mirror is not None and self.mirror is not None  # emit() calls this only with a mirror open
        try:
            mirror.write(line + "\n")
            mirror.flush()
        except OSError as exc:
            if not self.mirror_failed:
                logging.getLogger(__name__).warning("cannot append to %s (%s); events go to stdout only",
                                                    self.mirror, exc.strerror or exc)
            self.mirror_failed = True
            with contextlib.suppress(OSError, ValueError):
                mirror.close()
            try:
                self._mirror_file = open_mirror(self.mirror)
            except OSError:
                self._mirror_file = None

    def metric(self, stage: str, step: int, values: dict, sweep: dict | None = None) -> Event:
        """``sweep`` (index, count, learning_rate) tags the curves of one learning rate of a sweep."""
        extra = {"sweep": sweep} if sweep else {}
        return self.emit("metric", stage=stage, step=step, values=_finite(values), **extra)

    def progress(self, stage: str, step: int, total: int, elapsed_s: float, unit: str = "step",
                 sweep: dict | None = None, part: dict | None = None) -> Event:
        """``sweep`` (a learning rate of a sweep) or ``part`` (index, count: one of the stage's parts, e.g. the
        evaluation's models) say which share of the stage this progress is of."""
        fraction = step / total if total else 0.0
        eta = elapsed_s * (total - step) / step if step and total else None
        extra = {"sweep": sweep} if sweep else {}
        extra.update({"part": part} if part else {})
        return self.emit("progress", stage=stage, step=step, total=total, fraction=round(fraction, 4),
                         elapsed_s=round(elapsed_s, 2), eta_s=None if eta is None else round(eta, 1), unit=unit,
                         **extra)

    def log(self, message: str, level: str = "info") -> Event:
        return self.emit("log", level=level, message=message)

    def status(self, state: str, stage: str = "", message: str = "", **place: int) -> Event:
        return self.emit("status", state=state, stage=stage, message=message, **place)

    def error(self, message: str, stage: str = "", detail: str = "") -> Event:
        # the last guard for a sentence that echoes a huge value: its start and its advice (the end) are kept
        return self.emit("error", message=shorten(message, MAX_ERROR_CHARS), stage=stage, detail=detail)

    def close(self) -> None:
        if self._mirror_file:
            with contextlib.suppress(OSError):
                self._mirror_file.close()
            self._mirror_file = None


def io_sentence(exc: BaseException) -> str:
    """One sentence for an I/O failure (disk full, a link where a run file should be, no permission), also for
    the libraries that wrap ENOSPC in their own exceptions (torch's "file write failed", safetensors' IoError)."""
    text = str(exc)
    where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
    code = exc.errno if isinstance(exc, OSError) else None
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or "StorageFull" in text \
            or "file write failed" in text:
        return f"the disk is full{where}; free some space and try again (a started run continues with " \
               "compression-engine run --resume RUN_ID)."
    if code == errno.ELOOP:
        return f"a symbolic link stands where a run file should be{where}; the engine never writes through links " \
               "in a run folder, so remove the link and try again."
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"no permission{where} ({getattr(exc, 'strerror', '')}); fix the permissions of that file or folder "
                "and try again.")
    return f"{getattr(exc, 'strerror', None) or text}{where}; check the disk and the folder, then try again."


def open_mirror(path: Path) -> IO[str]:
    """events.jsonl opened for appending: never through a symbolic link (O_NOFOLLOW), and with a torn last line
    (a crash or a full disk mid-write) cut off first, so the next event starts on a line of its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
                 | getattr(os, "O_NONBLOCK", 0), 0o644)  # a device in its place must not block the open
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "events file is not a regular file", str(path))
        os.set_blocking(fd, True)
        _repair_torn_line(fd)
        os.lseek(fd, 0, os.SEEK_END)
        return os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def _repair_torn_line(fd: int, chunk: int = 1 << 16) -> None:
    """Truncate the file after its last newline (nothing after it is a complete event)."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - chunk)
        block = os.pread(fd, end - start, start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    else:
        keep = 0
    if keep < size:
        logging.getLogger(__name__).warning("events file %s ended in a torn line (%d bytes); cut it off",
                                            getattr(fd, "name", fd), size - keep)
        os.ftruncate(fd, keep)


def hello(writer: EventWriter, command: str, version: str) -> Event:
    return writer.emit("hello", engine_version=version, pid=os.getpid(), command=command, protocol=PROTOCOL_VERSION)


def read_events(path: Path, start: int = 0) -> Iterator[tuple[int, Event]]:
    """Events of an events.jsonl from byte offset ``start``, with the offset after each; a trailing partial
    line (a run still writing) is left for the next read. Every line is checked on its own (JSON, types of
    seq/time/type/data): a bad one is skipped with a warning, never fatal for a replay or a resume. Anything
    but a regular file (a FIFO, a device, a folder) is refused with OSError before a byte is read, so a
    replay or a resume never blocks on one."""
    skipped, first = 0, ""
    with open_regular(path) as f:
        f.seek(start)
        offset = start
        while raw := f.readline(MAX_EVENT_LINE + 1):
            where = offset
            if len(raw) > MAX_EVENT_LINE:  # no event is this long: skip to the line's end without holding it
                while raw and not raw.endswith(b"\n"):
                    offset += len(raw)
                    raw = f.readline(1 << 20)
                if not raw:
                    break  # still being written (or torn): left for the next read, as a short partial line is
                offset += len(raw)
                skipped, first = skipped + 1, first or f"at byte {where}: a line of more than {MAX_EVENT_LINE:,} bytes"
                continue
            if not raw.endswith(b"\n"):
                break
            offset += len(raw)
            try:
                event = Event.from_json(raw)
            except ProtocolError as exc:  # a corrupt line is skipped
                skipped, first = skipped + 1, first or f"at byte {where}: {exc}"
                continue
            yield offset, event
    if skipped:
        logging.getLogger(__name__).warning("%s: skipped %d unreadable event line(s) (the first %s)", path,
                                            skipped, shorten(first, 200))


def open_regular(path: Path) -> IO[bytes]:
    """``path`` opened for reading in binary, refusing a symbolic link (O_NOFOLLOW: ELOOP) and anything but a
    regular file (EINVAL) — opened with O_NONBLOCK first, so a FIFO put in a file's place cannot hang us."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                 | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
            raise OSError(errno.EINVAL, f"{what} stands where a file should be", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def parse_command(line: str | bytes) -> dict:
    """A stdin command as a dict with at least ``type``; ProtocolError says what is wrong with the line (any
    parse failure: bad JSON, a 5,000-digit number, 50,000-deep nesting, NaN, bytes that are not UTF-8)."""
    if isinstance(line, (bytes, bytearray)):  # a reader of raw stdin: its bytes need not be UTF-8
        try:
            line = bytes(line).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"command is not UTF-8 text (byte {exc.start}); send one JSON object a line, "
                                "encoded as UTF-8.") from None
    line = line.strip()
    if not line:
        raise ProtocolError("empty command line.")
    try:
        obj = safe_json_loads(line, allow_nan=True)  # NaN reaches the field checks, which name the field
    except JSONProblem as exc:
        raise ProtocolError(f"command {exc}; send one flat JSON object a line.") from None
    if not isinstance(obj, dict):
        raise ProtocolError("command must be a JSON object with a 'type'.")
    if obj.get("type") not in COMMAND_TYPES:
        raise ProtocolError(f"unknown command type {shorten(obj.get('type'), 40)!r}; expected one of "
                            f"{', '.join(COMMAND_TYPES)}.")
    return obj


def command_line(type_: str, **fields: Any) -> str:
    """One stdin line for the engine (used by the studio)."""
    return json.dumps({"type": type_, **fields}) + "\n"
