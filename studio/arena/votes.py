"""Blind-mode votes, kept with the run: one JSON line per vote in ``<run folder>/arena_votes.jsonl`` (or the
data directory when the models come from no run), and the tally per model pair. Stdlib only."""
from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from engine.contract.safe_json import safe_json_loads

log = logging.getLogger(__name__)

VOTES_FILE = "arena_votes.jsonl"


@dataclass
class PairTally:
    """Head-to-head of two models over every vote in which both answered (``first`` < ``second`` by name)."""

    first: str
    second: str
    first_wins: int = 0
    second_wins: int = 0
    ties: int = 0  # votes for "tie" while both answered

    @property
    def total(self) -> int:
        return self.first_wins + self.second_wins + self.ties

    def text(self) -> str:
        ties = f", {self.ties} tie{'s' if self.ties != 1 else ''}" if self.ties else ""
        return f"{self.first} {self.first_wins} – {self.second_wins} {self.second}{ties}"


def votes_path(run_paths: list[str | Path], home: Path | None = None) -> Path:
    """Where votes go: the run folder of the first pane model that came from a run, else the data directory."""
    for run_path in run_paths:
        if run_path and Path(run_path).is_dir():
            return Path(run_path) / VOTES_FILE
    if home is None:
        from engine.contract.runs import data_dir

        home = data_dir()
    return Path(home) / VOTES_FILE


def append_vote(path: Path, record: dict) -> None:
    """Append one vote (append-only, one line each, so two studios voting at once do not clobber each other)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_votes(path: Path) -> list[dict]:
    """Every vote in the file; corrupt lines are skipped."""
    if not Path(path).is_file():
        return []
    votes = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = safe_json_loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("models"), dict):
            votes.append(record)
    return votes


def tally(votes: list[dict]) -> list[PairTally]:
    """Wins per model pair: the winner beats each other model shown, a tie counts for every pair; a pair whose
    two models both lost to a third learns nothing from that vote and is left alone."""
    pairs: dict[tuple[str, str], PairTally] = {}
    for vote in votes:
        names = sorted(set(vote["models"].values()))
        winner = vote.get("winner")
        for first, second in itertools.combinations(names, 2):
            if winner not in (first, second, "tie"):
                continue
            entry = pairs.setdefault((first, second), PairTally(first, second))
            if winner == first:
                entry.first_wins += 1
            elif winner == second:
                entry.second_wins += 1
            else:
                entry.ties += 1
    return sorted(pairs.values(), key=lambda p: (-p.total, p.first, p.second))
