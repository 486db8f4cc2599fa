"""Every error class of the project, in one place. Each one's message is a sentence a user can act on: the CLI
prints it (exit 2) and sends it as an ``error`` event, never a traceback."""
from __future__ import annotations


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
