"""JSON from anywhere outside this process (stdin commands, events files, data files, the run index, run.json,
cache metadata, specs) parsed as untrusted input: every way a text can fail to become plain data ends in one
:class:`JSONProblem` with a short reason, never in an exception a reader did not expect.

What the standard library lets through or raises besides ``JSONDecodeError``, each turned into a JSONProblem:

- an integer of more than 4,300 digits: Python's own int-from-text limit raises a bare ``ValueError``;
- ``[[[[…`` tens of thousands deep: the decoder's recursion raises ``RecursionError`` (and structures only a
  little less deep would make every recursive consumer after it fail the same way, so depth is capped);
- ``NaN``, ``Infinity`` and numbers like ``1e999`` that overflow to infinity: not JSON, not a number anything
  downstream can use;
- bytes that are not UTF-8 (and lone surrogates from ``\\ud800`` escapes stay a caller's business: they are
  valid JSON, see :func:`unencodable`).

Stdlib only: part of the contract the studio imports.
"""
from __future__ import annotations

import errno
import json
import math
import os
import stat
from typing import Any

from engine.contract.errors import ProtocolError, shorten, unencodable  # noqa: F401 (re-exported)

MAX_JSON_DEPTH = 100  # a command, an event, a record or run.json is nested a few levels; nothing needs 100


class JSONProblem(ProtocolError):
    """A text that is not plain, finite JSON data. The message is a predicate that follows what was read
    ("is not valid JSON (…)", "cannot be read (…)"): callers put the file, line or command in front."""

    @property
    def bare(self) -> str:
        """The message without its leading "is " ("not valid JSON (…)"), for lists of problems."""
        text = str(self)
        return text[3:] if text.startswith("is ") else text


def _constant(name: str) -> Any:
    raise JSONProblem(f"cannot be read ({name} is not a number JSON allows; write a finite number or null)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONProblem(f"cannot be read (the number {shorten(text, 20)} is too large)")
    return value


def _decoder(pairs_hook: Any = None, allow_nan: bool = False) -> json.JSONDecoder:
    if allow_nan:  # NaN/Infinity become floats, for a reader whose field checks name the field (spec, sampling)
        return json.JSONDecoder(object_pairs_hook=pairs_hook)
    return json.JSONDecoder(parse_constant=_constant, parse_float=_finite_float, object_pairs_hook=pairs_hook)


def safe_json_loads(data: str | bytes, *, max_depth: int = MAX_JSON_DEPTH, unique_keys: bool = False,
                    allow_nan: bool = False) -> Any:
    """The plain data in ``data`` (text, or bytes that must be UTF-8); JSONProblem says why it is not.
    ``unique_keys`` refuses an object that names one key twice (a setting given twice: which one wins?);
    ``allow_nan`` lets NaN/Infinity through as floats for a caller that checks every number itself."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise JSONProblem(f"is not UTF-8 text (byte {exc.start})") from None
    decoder = _DECODERS[bool(unique_keys), bool(allow_nan)]
    try:
        value = decoder.decode(data)
    except JSONProblem:
        raise
    except json.JSONDecodeError as exc:
        raise JSONProblem(f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise JSONProblem(f"is nested too deeply (more than {max_depth} levels)") from None
    except (ValueError, OverflowError) as exc:  # an integer of more than 4,300 digits (Python's own limit)
        raise JSONProblem(f"cannot be read ({str(exc).split(';')[0]})") from None
    if too_deep(value, max_depth):
        raise JSONProblem(f"is nested too deeply (more than {max_depth} levels)")
    return value


def _unique_object(pairs: list[tuple[str, Any]]) -> dict:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise JSONProblem(f"cannot be used (the key {shorten(key, 60)!r} is given twice; keep one)")
        seen[key] = value
    return seen


_DECODERS = {(unique, nan): _decoder(_unique_object if unique else None, nan)  # built once: they hold no state
             for unique in (False, True) for nan in (False, True)}


def too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists/objects more than ``limit`` levels (iteratively: deep input must not
    exhaust the stack of the check meant to catch it). Only containers are visited: cheap on flat data."""
    if not isinstance(value, (dict, list)):
        return False
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


MAX_JSON_FILE_BYTES = 16 << 20  # run.json, eval.json, settings, a model's config.json: small text


def load_json_file(path: str | os.PathLike, *, limit: int = MAX_JSON_FILE_BYTES, follow_links: bool = True) -> Any:
    """The data in a small JSON file. OSError when it cannot be opened or is not a regular file (a FIFO or
    device in its place is refused at once: opened with O_NONBLOCK, never waited on), JSONProblem (a ValueError)
    for anything in it that is not plain data, or more than ``limit`` bytes. ``follow_links=False`` for files
    inside a run folder, which never lead out of it."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0)))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise JSONProblem(f"is larger than {limit // 1024} KiB, too large to be this kind of file")
    return safe_json_loads(data)
