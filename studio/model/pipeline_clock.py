"""Whole-pipeline progress and ETA of a run, folded from its status and progress events — plain Python, no Qt.

The engine announces each stage with a status event that carries its place (``index``/``count``; runs written
before that only say "stage 2/4: sft" in the message) and reports progress within the stage (``fraction``,
``eta_s``). Every stage counts as an equal share of the run. A stage's sub-phases (``student_kd:teacher``, the
evaluation's ``eval:teacher``) do not move the run's bar, which therefore never runs backwards. The ETA is the
current stage's own ETA plus the stages still to come at the mean duration of the stages finished so far (before
any finished: at the current stage's projected duration) — a rough figure, and shown as one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

STAGE_OF = re.compile(r"stage (\d+)/(\d+)")


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def stage_share(data: dict, part: dict | None = None) -> dict:
    """A progress event as a share of its whole stage. A stage done in parts — a learning-rate sweep's rates
    (``sweep``), the evaluation's models (``part``) — reports each part's own 0→1; over the stage it is
    (index + fraction) / count, and the ETA adds the parts still to come at this part's projected duration.
    The result keeps the part's own step/total and says which part it is (``part``)."""
    part = part or data.get("part")
    index, count = (part.get("index"), part.get("count")) if isinstance(part, dict) else (None, None)
    fraction = _number(data.get("fraction"))
    if not isinstance(index, int) or not isinstance(count, int) or not 0 <= index < count or fraction is None:
        return dict(data)
    fraction = min(max(fraction, 0.0), 1.0)
    out = {**data, "fraction": (index + fraction) / count, "part": {"index": index, "count": count}}
    if "learning_rate" in part:
        out["sweep"] = part
    eta, elapsed = _number(data.get("eta_s")), _number(data.get("elapsed_s"))
    if eta is not None and elapsed is not None:
        out["eta_s"] = eta + (count - index - 1) * (elapsed + eta)
    return out


@dataclass
class PipelineClock:
    index: int = 0  # 1-based place of the current stage; 0 before the first stage started
    count: int = 0
    stage: str = ""
    started: float | None = None  # event time at which the current stage started
    last_time: float = 0.0  # event time of the newest event seen (the clock's "now": replays stay reproducible)
    stage_fraction: float = 0.0
    stage_eta: float | None = None
    durations: dict[str, float] = field(default_factory=dict)  # stages that finished, in seconds
    finished: bool = False

    def on_hello(self, time: float) -> None:
        """A (re)start of the engine: the stage that was running when the last attempt ended did not finish."""
        self.stage, self.started, self.last_time = "", None, time
        self.stage_fraction, self.stage_eta, self.finished = 0.0, None, False

    def on_status(self, data: dict, time: float) -> None:
        self.last_time = max(self.last_time, time)
        index, count = data.get("index"), data.get("count")
        if not isinstance(index, int) or not isinstance(count, int):
            match = STAGE_OF.match(str(data.get("message", "")))
            if not match:
                return  # "training for 40 steps", "cancelling", …: not the start of a stage
            index, count = int(match[1]), int(match[2])
        stage = str(data.get("stage", ""))
        if self.stage and self.started is not None and stage != self.stage:
            self.durations[self.stage] = time - self.started
        self.index, self.count, self.stage, self.started = index, count, stage, time
        self.stage_fraction, self.stage_eta, self.finished = 0.0, None, False

    def on_progress(self, data: dict, time: float) -> None:
        """``data`` as :func:`stage_share` left it. A sub-phase ("stage:phase") moves the run's bar only when it
        says which part of the stage it is (the evaluation's models do): a phase of unknown share could send the
        bar backwards."""
        self.last_time = max(self.last_time, time)
        stage = str(data.get("stage", ""))
        if stage != self.stage and not (stage.startswith(self.stage + ":") and "part" in data and self.stage):
            return  # a sub-phase of unknown share, or a stage this clock did not see start
        fraction = _number(data.get("fraction"))
        self.stage_fraction = min(max(fraction, 0.0), 1.0) if fraction is not None else self.stage_fraction
        self.stage_eta = _number(data.get("eta_s"))

    def on_done(self, state: str, time: float) -> None:
        self.last_time = max(self.last_time, time)
        if state == "finished":
            if self.stage and self.started is not None:
                self.durations[self.stage] = time - self.started
            self.finished = True

    @property
    def fraction(self) -> float | None:
        """Share of the whole run done, or None before the engine said how many stages there are."""
        if self.finished:
            return 1.0
        if not self.count:
            return None
        return min(1.0, (self.index - 1 + self.stage_fraction) / self.count)

    @property
    def eta_s(self) -> float | None:
        """Seconds to the end of the run (rough), or None when nothing is known to estimate it from."""
        if self.finished or not self.count or not self.index or self.started is None:
            return None
        elapsed = max(self.last_time - self.started, 0.0)
        mean = sum(self.durations.values()) / len(self.durations) if self.durations else None
        current = self.stage_eta
        if current is None and mean is not None:
            current = max(mean - elapsed, 0.0)
        if current is None:
            return None
        per_stage = mean if mean is not None else elapsed + current
        return current + (self.count - self.index) * per_stage
