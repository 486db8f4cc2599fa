"""What the run history shows, computed from the run store — plain Python, no Qt."""
from __future__ import annotations

import time
from pathlib import Path

from engine.contract.run_status import LIVE_STATES, RESUMABLE_STATES, has_resume_point
from engine.contract.runs import RunRecord, RunStore
from engine.contract.protocol import read_events
from engine.contract.safe_json import load_json_file
from studio.model.run_state import MetricStore, RunState


def display_status(record: RunRecord) -> str:
    """The status the history shows: the contract's (engine/contract/run_status.py), as the CLI's ``runs``."""
    return record.current_status()


def format_time(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else ""


def key_scores(scores: dict, limit: int = 3) -> str:
    """The few scores worth a column: retention first, then draft acceptance (a student as its teacher's draft),
    then GRPO's held-out correctness (after, before), then ROUGE-L, then anything else numeric."""
    numeric = {k: v for k, v in (scores or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def rank(key: str) -> tuple[int, str]:
        order = (0 if "retention" in key else 1 if "draft_acceptance" in key else 2 if "correct_" in key
                 else 3 if "rouge" in key.lower() else 4)
        return order, key

    parts = []
    for key in sorted(numeric, key=rank)[:limit]:
        value = numeric[key]
        short = key.replace("eval/", "").replace("/", " ").replace("draft_acceptance", "draft acceptance")
        share = "retention" in key or "draft_acceptance" in key
        parts.append(f"{short} {100 * value:.1f} %" if share else f"{short} {value:.3f}")
    return ", ".join(parts)


def read_eval(record: RunRecord) -> dict | None:
    path = Path(record.path) / "eval.json"
    try:
        report = load_json_file(path, follow_links=False) if path.exists() else None  # a FIFO: refused
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None  # a list or a number is no report


def compare_reports(named: list[tuple[str, dict | None]]) -> dict | None:
    """Several runs' evaluations as one table: a row per run · model, each with the retention against its own
    run's reference; None when none of them has a model comparison. Names that repeat get a number."""
    models: dict[str, dict] = {}
    seen: dict[str, int] = {}
    for name, report in named:
        rows = (report or {}).get("models")
        if not isinstance(rows, dict):
            continue
        seen[name] = seen.get(name, 0) + 1
        label = name if seen[name] == 1 else f"{name} ({seen[name]})"
        for model, scores in rows.items():
            models[f"{label} · {model}"] = scores
    return {"models": models, "reference": ""} if models else None


class RunTail:
    """One run's events.jsonl read incrementally into a RunState (the history follows runs still going)."""

    def __init__(self, record: RunRecord, prefix: str = "") -> None:
        self.path = Path(record.path) / "events.jsonl"
        self.prefix = prefix
        self.state = RunState()
        self.offset = 0

    def read(self) -> int:
        """Fold in the events appended since the last read; returns how many."""
        count = 0
        if self.path.exists():
            for offset, event in read_events(self.path, self.offset):
                self.offset = offset
                self.state.apply(event, self.prefix)
                count += 1
        return count


class OverlayCurves:
    """The curves of one run, or of several in one store with each run's name in front (an LR sweep, KD vs
    SFT); :meth:`update` adds what the runs logged since."""

    def __init__(self, records: list[RunRecord]) -> None:
        names = [r.name for r in records]
        self.tails = [RunTail(r, "" if len(records) == 1 else
                              r.name if names.count(r.name) == 1 else f"{r.name} ({r.id[-4:]})") for r in records]
        self.ids = {r.id for r in records}
        self.store = self.tails[0].state.metrics if len(records) == 1 else MetricStore()
        self.update()

    def update(self) -> bool:
        read = sum(tail.read() for tail in self.tails)
        if read and len(self.tails) > 1:
            for tail in self.tails:  # the series objects are shared: only new curves need adding
                for label, series in tail.state.metrics.series.items():
                    if label not in self.store.series:
                        self.store.series[label] = series
                        self.store.groups[label] = tail.state.metrics.groups[label]
            self.store.version += 1
        return bool(read)


def resume_point(record: RunRecord) -> bool:
    """Whether a resumed run would carry on rather than start over (the contract's checkpoint layout)."""
    return has_resume_point(record.path)


def resume_refusal(record: RunRecord) -> str:
    """Why a run cannot be resumed (the disabled button's tooltip)."""
    status = display_status(record)
    if status in LIVE_STATES:
        return "The run is still going."
    if status == "finished":
        return "The run finished; Re-run starts a new one with its spec."
    if status not in RESUMABLE_STATES:
        return f"A {status} run cannot be resumed."
    return "Nothing to resume from: no stage finished and no checkpoint was saved; Re-run starts it over."


def resumable(record: RunRecord) -> bool:
    """An interrupted, failed or cancelled run with a resume point."""
    return display_status(record) in RESUMABLE_STATES and resume_point(record)


def live_runs(store: RunStore) -> list[RunRecord]:
    """Runs whose engine is still running (to be followed again after a studio restart)."""
    return [r for r in store.list() if r.is_alive()]
