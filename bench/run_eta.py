"""How true the monitor's whole-run ETA was (issue 20): replay a finished run's events.jsonl through the studio's
RunState and compare, at each progress event, the ETA the monitor showed with the time the run actually had left;
once as the studio computes it now (the engine's stage plan × measured seconds per step) and once with the plan
stripped (every stage an equal share, as before). Not a test.

Run: ``python bench/run_eta.py RUN_FOLDER/events.jsonl`` (e.g. a demo run with fewer steps, see bench/RESULTS.md).
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.contract.protocol import Event, read_events  # noqa: E402 - after the sys.path line above
from studio.model.run_state import RunState  # noqa: E402 - likewise

MOMENTS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9)  # shares of the run's wall time at which to report


def _without_plan(event: Event) -> Event:
    if event.type != "status":
        return event
    return Event(event.type, {k: v for k, v in event.data.items() if k != "plan"}, event.run_id, event.seq,
                 event.time)


def shown_etas(events: list[Event], strip_plan: bool) -> list[tuple[float, str, float, float]]:
    """(seconds since the start, stage, ETA shown, seconds actually left) at each progress event."""
    state, rows, start, end = RunState(), [], events[0].time, events[-1].time
    for event in events:
        state.apply(_without_plan(event) if strip_plan else event)
        if event.type == "progress" and state.pipeline.eta_s is not None:
            rows.append((event.time - start, state.pipeline.stage, state.pipeline.eta_s, end - event.time))
    return rows


def main(path: str) -> None:
    events = [event for _, event in read_events(Path(path))]
    wall = events[-1].time - events[0].time
    out = sys.stdout
    for label, strip in (("stage plan × measured rates (now)", False), ("equal shares (before)", True)):
        rows = shown_etas(events, strip)
        out.write(f"{label}; run {wall:.0f} s\n")
        for share in MOMENTS:
            t, stage, eta, left = min(rows, key=lambda r: abs(r[0] - share * wall))
            out.write(f"  at {t:5.0f} s ({stage}): ETA {eta:5.0f} s, left {left:5.0f} s, ratio {eta / max(left, 1):.2f}\n")


if __name__ == "__main__":
    main(sys.argv[1])
