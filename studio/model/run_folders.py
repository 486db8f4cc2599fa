"""Which runs changed on disk, and whose shown status — plain Python, no Qt (studio/run_watch.py polls it).

On every :meth:`RunFolderScanner.scan` each run folder's ``run.json`` (modification time, size) and
``events.jsonl`` (size) are compared with the last scan, and the engines of runs marked running are checked for
life: a run whose files changed, that came or went, or whose engine died is reported. Two ``stat`` calls per run
are cheap and, unlike file-system notifications, work the same on every platform and file system (network homes
included) and cannot overflow.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.contract.run_status import LIVE_STATES, run_status
from engine.contract.safe_json import load_json_file

log = logging.getLogger(__name__)


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, -1)
    return (st.st_mtime_ns, st.st_size)


@dataclass
class RunFolderScanner:
    runs_dir: Path
    files: dict[str, tuple] = field(default_factory=dict)  # run id → (run.json stat, events.jsonl size)
    statuses: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # run id → (name, status, pid)
    shown: dict[str, str] = field(default_factory=dict)  # run id → status as shown (interrupted for dead engines)
    scanned: bool = False

    def scan(self) -> tuple[set[str], list[tuple[str, str, str, str]]]:
        """(ids whose files changed, appeared or vanished; [(id, name, old, new) shown-status changes]). The
        first scan reports every run as changed and no status change (nothing *became* anything)."""
        now: dict[str, tuple] = {}
        try:
            entries = list(os.scandir(self.runs_dir))
        except OSError as exc:
            log.warning("cannot list %s: %s", self.runs_dir, exc)
            return set(), []
        for entry in entries:
            info = _stat(os.path.join(entry.path, "run.json"))
            if info[1] >= 0:
                now[entry.name] = (info, _stat(os.path.join(entry.path, "events.jsonl"))[1])
        changed = {i for i in now.keys() | self.files.keys() if now.get(i) != self.files.get(i)}
        self.files = now
        for run_id in changed:
            self._read_status(run_id)
        transitions = []
        for run_id, (name, status, pid) in self.statuses.items():
            shown = run_status(self.runs_dir / run_id, status, pid)
            old = self.shown.get(run_id)
            if old != shown:
                self.shown[run_id] = shown
                if self.scanned:
                    transitions.append((run_id, name, old or "", shown))
                    changed.add(run_id)  # an engine that died changes nothing on disk
        self.scanned = True
        return changed, transitions

    def _read_status(self, run_id: str) -> None:
        if run_id not in self.files:
            self.statuses.pop(run_id, None)
            self.shown.pop(run_id, None)
            return
        try:
            info = load_json_file(self.runs_dir / run_id / "run.json", follow_links=False)  # never blocks
            self.statuses[run_id] = (str(info.get("name", run_id)), str(info.get("status", "")),
                                     int(info.get("pid", 0) or 0))
        except (OSError, ValueError) as exc:  # written by rename, so only a foreign file can be torn
            log.debug("cannot read %s/run.json: %s", run_id, exc)

    def count(self) -> tuple[int, int]:
        """(runs, runs whose engine is alive) as of the last scan."""
        alive = sum(1 for i, s in self.shown.items() if s in LIVE_STATES)
        return len(self.files), alive
