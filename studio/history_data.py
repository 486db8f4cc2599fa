"""What the run history shows, computed from the run store — plain Python, no Qt."""
from __future__ import annotations

import json
import time
from pathlib import Path

from engine.runs import RunRecord, RunStore
from studio.run_state import MetricStore, replay


def display_status(record: RunRecord) -> str:
    """The stored status, except a run marked running whose engine is gone: it was interrupted."""
    if record.status in ("running", "cancelling") and not record.is_alive():
        return "interrupted"
    return record.status


def format_time(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else ""


def key_scores(scores: dict, limit: int = 3) -> str:
    """The few scores worth a column: retention first, then GRPO's held-out correctness (after, before), then
    ROUGE-L, then anything else numeric."""
    numeric = {k: v for k, v in (scores or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def rank(key: str) -> tuple[int, str]:
        order = 0 if "retention" in key else 1 if "correct_" in key else 2 if "rouge" in key.lower() else 3
        return order, key

    parts = []
    for key in sorted(numeric, key=rank)[:limit]:
        value = numeric[key]
        short = key.replace("eval/", "").replace("/", " ")
        parts.append(f"{short} {100 * value:.1f} %" if "retention" in key else f"{short} {value:.3f}")
    return ", ".join(parts)


def read_eval(record: RunRecord) -> dict | None:
    path = Path(record.path) / "eval.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    except (OSError, ValueError):
        return None


def overlay_store(records: list[RunRecord]) -> MetricStore:
    """The curves of several runs in one store, each labelled with its run's name (an LR sweep, KD vs SFT)."""
    if len(records) == 1:
        return replay(Path(records[0].path) / "events.jsonl").metrics
    store = MetricStore()
    names = [r.name for r in records]
    for record in records:
        prefix = record.name if names.count(record.name) == 1 else f"{record.name} ({record.id[-4:]})"
        state = replay(Path(record.path) / "events.jsonl", prefix)
        for label, series in state.metrics.series.items():
            store.series[label] = series
            store.groups[label] = state.metrics.groups[label]
    store.version += 1
    return store


def live_runs(store: RunStore) -> list[RunRecord]:
    """Runs whose engine is still running (to be followed again after a studio restart)."""
    return [r for r in store.list() if r.is_alive()]
