"""Whole-pipeline progress and ETA of a run, folded from its status and progress events — plain Python, no Qt.

The engine announces each stage with a status event that carries its place (``index``/``count``; runs written
before that only say "stage 2/4: sft" in the message) and the plan of every stage (kind, the base model it
trains, its optimizer steps), and reports progress within the stage (``fraction``, ``eta_s``). The run's bar gives
every stage an equal share; a stage done in parts (a sweep's rates, the evaluation's models) moves it part by part,
other sub-phases (``student_kd:teacher``) do not, so it never runs backwards. The ETA is measured, then weighed:
the current stage's own ETA, plus each training stage still to come at its planned steps × the seconds per step
measured for the model it trains (the teacher's steps cost more than the student's) — or, for a model not yet
measured, any measured rate (before a stage's first step, its own planned steps count too, after the ETA of the
sub-phase it starts with, like KD's teacher answers). Stages the plan cannot weigh (evaluation, quantization,
export) count at the mean duration of such stages finished so far, else are named as not included. Runs without a
plan fall back to the stages' mean duration. A rough figure, and shown as one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.contract.stage_kinds import STAGE_KIND_TABLE

STAGE_OF = re.compile(r"stage (\d+)/(\d+)")
# stages whose cost is their optimizer steps: the kinds that train, by the contract's table
TRAINING_KINDS = tuple(kind for kind, row in STAGE_KIND_TABLE.items() if row.trains)


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


def _rate_key(entry: dict) -> str:
    return f"{entry.get('kind', '')} {entry.get('model', '')}"


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
    plan: list[dict] = field(default_factory=list)  # the engine's plan: {stage, kind, model, steps} per stage
    step_seconds: dict[str, float] = field(default_factory=dict)  # "kind model" → seconds per training step
    phase_eta: float | None = None  # a sub-phase's own ETA before the stage's steps begin (KD's teacher answers)

    def on_hello(self, time: float) -> None:
        """A (re)start of the engine: the stage that was running when the last attempt ended did not finish."""
        self.stage, self.started, self.last_time = "", None, time
        self.stage_fraction, self.stage_eta, self.finished, self.phase_eta = 0.0, None, False, None

    def on_status(self, data: dict, time: float) -> None:
        self.last_time = max(self.last_time, time)
        index, count = data.get("index"), data.get("count")
        if not isinstance(index, int) or not isinstance(count, int):
            match = STAGE_OF.match(str(data.get("message", "")))
            if not match:
                return  # "training for 40 steps", "cancelling", …: not the start of a stage
            index, count = int(match[1]), int(match[2])
        stage = str(data.get("stage", ""))
        if isinstance(data.get("plan"), list) and all(isinstance(p, dict) for p in data["plan"]):
            self.plan = list(data["plan"])
        if self.stage and self.started is not None and stage != self.stage:
            self.durations[self.stage] = time - self.started
        self.index, self.count, self.stage, self.started = index, count, stage, time
        self.stage_fraction, self.stage_eta, self.finished, self.phase_eta = 0.0, None, False, None

    def on_progress(self, data: dict, time: float) -> None:
        """``data`` as :func:`stage_share` left it. A sub-phase ("stage:phase") moves the run's bar only when it
        says which part of the stage it is (the evaluation's models do): a phase of unknown share could send the
        bar backwards."""
        self.last_time = max(self.last_time, time)
        stage = str(data.get("stage", ""))
        if self.stage and stage.startswith(self.stage + ":") and "part" not in data:
            self.phase_eta = _number(data.get("eta_s"))  # the ETA counts it; the bar cannot (unknown share)
            return
        if stage != self.stage and not (stage.startswith(self.stage + ":") and "part" in data and self.stage):
            return  # a stage this clock did not see start
        fraction = _number(data.get("fraction"))
        self.stage_fraction = min(max(fraction, 0.0), 1.0) if fraction is not None else self.stage_fraction
        self.stage_eta = _number(data.get("eta_s"))
        step, elapsed = _number(data.get("step")), _number(data.get("elapsed_s"))
        entry = self._planned(self.stage)
        if stage == self.stage and data.get("unit", "step") == "step" and step and elapsed and entry:
            self.step_seconds[_rate_key(entry)] = elapsed / step

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

    def _rate(self, entry: dict, fallback: float) -> float:
        """Seconds per step of a planned stage: measured for the same kind and model (a GRPO step generates, a
        KD step runs the teacher too), else for the same model, else ``fallback``."""
        same_model = [v for k, v in self.step_seconds.items() if k.split(" ", 1)[1] == str(entry.get("model", ""))]
        return self.step_seconds.get(_rate_key(entry)) or (max(same_model) if same_model else fallback)

    def _stage_seconds(self, entry: dict) -> float | None:
        """A planned training stage's seconds at the measured rates; None when it cannot be weighed."""
        steps = _number(entry.get("steps"))
        if entry.get("kind") not in TRAINING_KINDS or not steps or not self.step_seconds:
            return None
        return steps * self._rate(entry, sum(self.step_seconds.values()) / len(self.step_seconds))

    def _planned(self, stage: str) -> dict | None:
        return next((p for p in self.plan if p.get("stage") == stage), None)

    @property
    def eta_s(self) -> float | None:
        """Seconds to the end of the run (rough), or None when nothing is known to estimate it from."""
        if self.finished or not self.count or not self.index or self.started is None:
            return None
        elapsed = max(self.last_time - self.started, 0.0)
        mean = sum(self.durations.values()) / len(self.durations) if self.durations else None
        current = self.stage_eta
        if current is None:  # before the stage's first step: its planned steps (after its sub-phase, if any)
            planned = self._stage_seconds(self._planned(self.stage) or {})
            current = None if planned is None else planned + (self.phase_eta or 0.0)
        if current is None and mean is not None:
            current = max(mean - elapsed, 0.0)
        if current is None:
            return None
        to_come = self._to_come()
        if to_come is not None:
            return current + to_come[0]
        per_stage = mean if mean is not None else elapsed + current
        return current + (self.count - self.index) * per_stage

    @property
    def not_included(self) -> list[str]:
        """Stages to come that the ETA could not weigh (their cost is not in the plan nor measured yet)."""
        to_come = self._to_come()
        return to_come[1] if to_come is not None else []

    def _to_come(self) -> tuple[float, list[str]] | None:
        """(seconds, stages not weighed) for the stages after the current one, from the plan and the measured
        rates; None without a plan or a measured rate (then the stages' mean duration stands in)."""
        if len(self.plan) != self.count or not self.step_seconds:
            return None
        kinds = {p.get("stage"): p.get("kind") for p in self.plan}
        other = [d for name, d in self.durations.items() if kinds.get(name) not in TRAINING_KINDS]
        seconds, unweighed = 0.0, []
        for entry in self.plan[self.index:]:
            planned = self._stage_seconds(entry)
            if planned is not None:
                seconds += planned
            elif other:
                seconds += sum(other) / len(other)
            else:
                unweighed.append(str(entry.get("stage", "")))
        return seconds, unweighed
