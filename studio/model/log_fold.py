"""What the Log tab makes of the engine's stderr (Qt-free): tqdm bars become one updating progress line per bar,
library warnings (``…py:12: FutureWarning: …`` and the source line Python prints under them) are set aside to be
shown folded, and the tail of a run's ``engine.log`` is read when the engine died — the stderr it wrote after the
studio stopped reading it (a followed run, a studio restart) is there and nowhere else.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

# "Map:  45%|████▌     | 9/20 [00:03<00:04, 2.5it/s]", "12it [00:01,  9.8it/s]" (a bar without a total)
TQDM_BAR = re.compile(r"^(?P<desc>.*?)\s*(?:\d{1,3}%\|.*\|\s*[\d.]+[kMG]?/[\d.]+[kMG]?|[\d.]+[kMG]?it \[\d+:\d+)")
# warnings.showwarning's format: "path/to/module.py:123: FutureWarning: message"
LIBRARY_WARNING = re.compile(r"^\S.*?:\d+: \w*Warning: ")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TAIL_BYTES = 64 * 1024


@dataclass
class FoldedLine:
    """One line to show; ``bar`` (the bar's description) marks a progress line that replaces the previous line
    of the same bar."""

    text: str
    bar: str | None = None


@dataclass
class LogFolder:
    """Sorts lines as they arrive; keeps the warnings it took out (``warnings``) and the bar shown last."""

    warnings: list[str] = field(default_factory=list)
    _in_warning: bool = False

    def fold(self, lines: list[str]) -> list[FoldedLine]:
        """The lines to show, in order, with consecutive updates of one bar collapsed to the newest."""
        shown: list[FoldedLine] = []
        for raw in lines:
            line = ANSI.sub("", raw).rstrip()
            if not line.strip():
                continue
            if LIBRARY_WARNING.match(line):
                self.warnings.append(line)
                self._in_warning = True
                continue
            if self._in_warning and line[:1].isspace():  # the source line Python prints under a warning
                self.warnings[-1] += "\n" + line
                continue
            self._in_warning = False
            match = TQDM_BAR.match(line)
            bar = match["desc"].strip() if match else None
            if bar is not None and shown and shown[-1].bar == bar:
                shown[-1] = FoldedLine(line, bar)
            else:
                shown.append(FoldedLine(line, bar))
        return shown

    def reset(self) -> None:
        self.warnings.clear()
        self._in_warning = False


def read_tail(path: Path, max_lines: int = 40, max_bytes: int = TAIL_BYTES) -> list[str]:
    """The last lines of a log file (its last ``max_bytes`` at most); [] when it is missing, empty or not a
    regular file (a FIFO in its place must not block the GUI)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return []
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return []
        os.lseek(fd, max(0, info.st_size - max_bytes), os.SEEK_SET)
        data = os.read(fd, max_bytes)
    except OSError:
        return []
    finally:
        os.close(fd)
    text = data.decode("utf-8", errors="replace").replace("\r", "\n")
    lines = [line for line in text.split("\n") if line.strip()]
    if info.st_size > max_bytes and lines:
        lines = lines[1:]  # the first one was cut at the window's start
    return lines[-max_lines:]
