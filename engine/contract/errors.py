"""Every error class of the project, in one place. Each one's message is a sentence a user can act on: the CLI
prints it (exit 2) and sends it as an ``error`` event, never a traceback."""
from __future__ import annotations

from typing import Any


class SpecError(ValueError):
    """A spec value is invalid; the message is one sentence naming the field and what to do."""


class ProtocolError(ValueError):
    """A line that is not a valid event or command."""


class RecordProblem(ValueError):
    """One row cannot become a record; the message says what is wrong and what to do (no location)."""


class FileProblem(ValueError):
    """The file as a whole cannot be read (missing, unknown format, not a list); message includes the path."""


class EngineError(Exception):
    """An error the user can fix; its message is one sentence that says what and how (no traceback shown)."""


class StageCancelled(Exception):
    """Raised by a recipe (or its callback) after it saved a checkpoint because the user cancelled."""


class StoreError(RuntimeError):
    """The run store cannot do what was asked; the message is one sentence saying what and what to do."""


class RunNotFound(StoreError, KeyError):
    """No run with that id (or not a run id at all)."""

    def __str__(self) -> str:  # KeyError would quote the sentence
        return str(self.args[0]) if self.args else ""


class RunLocked(StoreError):
    """Another engine process is writing the run."""


class Diverged(EngineError):
    """Training produced a non-finite loss or weights: the stage fails, its last good checkpoint is kept."""


# ---- echoing what a user gave, in every error sentence -------------------------------------------------

def unencodable(text: str) -> int | None:
    """The index of the first character of ``text`` that UTF-8 cannot encode (a lone surrogate such as
    ``"\\ud800"``, which JSON escapes and Python strings allow but no tokenizer or file takes), else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def shorten(value: Any, limit: int = 80) -> str:
    """``value`` as text of at most ``limit`` characters (middle cut, with the length said), for echoing what a
    user gave in an error sentence: a 10,000-character name must not become a 10,000-character error line."""
    try:
        text = value if isinstance(value, str) else str(value)
    except ValueError:  # an int of more than 4,300 digits has no str() (Python's own limit)
        digits = int(value.bit_length() * 0.30103) + 1 if isinstance(value, int) else 0
        text = f"<a {digits:,}-digit number>" if digits else f"<a {type(value).__name__} too long to show>"
    if unencodable(text) is not None:  # a lone surrogate would make the error line itself unprintable
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= limit:
        return text
    keep = max(limit - 24, 8)
    return f"{text[:keep - keep // 4]}…[{len(text):,} chars]…{text[len(text) - keep // 4:]}"


def echo(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters by :func:`shorten`: the one way an error sentence quotes a
    value it was given (a stage name, a column, a setting), however long that value is."""
    try:
        return shorten(repr(value), limit)
    except ValueError:  # repr of an int of more than 4,300 digits
        return shorten(value, limit)
