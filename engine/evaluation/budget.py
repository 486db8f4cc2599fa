"""Held-out answers sized to the device: the evaluation stage and the 4-bit report first time a couple of answers
(the probe), extrapolate what ``max_eval_samples`` answers from every model would cost, use fewer samples where
that exceeds the stage's time budget (``eval_minutes``; by default 10 minutes on a CPU, none on a GPU), and say
before the long part starts how many answers it will generate and roughly how long that takes.

On a 2-core CPU a 0.5 B model answers one Dolly prompt in ~20 s: 50 prompts for two models took 38 minutes before
this existed. Every model answers the same records, so retention still compares like with like.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

DEVICE_BUDGET_MINUTES = {"cpu": 10.0}  # default budget by device type; absent: no limit (a GPU answers fast)
PROBE_ANSWERS = 2  # answers timed before the sample count is chosen
MIN_SAMPLES = 8  # below this a score says little; the budget never cuts further (the ETA says what it costs)


def budget_s(eval_minutes: float, device: str) -> float | None:
    """The time the held-out answers may take, in seconds: the stage's own ``eval_minutes``, else the device's
    default (None: no limit)."""
    minutes = eval_minutes or DEVICE_BUDGET_MINUTES.get(device.split(":")[0])
    return None if not minutes else 60.0 * minutes


@dataclass
class SamplePlan:
    """How many records every model answers, and what that is expected to cost."""
    asked: int  # records available within max_eval_samples
    chosen: int  # records every model answers
    per_answer_s: float  # measured on the probe
    eta_s: float  # expected time of all remaining answers, every model
    budget_s: float | None
    measured_on: str = f"the first {PROBE_ANSWERS}"  # which answers the rate was measured on

    @property
    def scaled(self) -> bool:
        return self.chosen < self.asked

    def sentence(self, models: int, device: str) -> str:
        """What the plan does, for an event and the report."""
        each = f"{self.per_answer_s:.1f} s per answer on {device}, measured on {self.measured_on}"
        if not self.scaled:
            return f"quality: {self.chosen} held-out samples × {models} model(s), about {_duration(self.eta_s)} " \
                   f"({each})"
        return (f"quality: {self.chosen} of {self.asked} held-out samples × {models} model(s), about "
                f"{_duration(self.eta_s)} ({each}); all {self.asked} would take about "
                f"{_duration(self.per_answer_s * self.asked * models)}, beyond the {_duration(self.budget_s or 0)} "
                "budget for this device — set eval_minutes (--max-minutes) to use more")


def plan_samples(asked: int, probe_s: float, probed: int, models: int, budget: float | None,
                 done: int | None = None) -> SamplePlan:
    """The sample count that fits ``budget`` seconds for ``models`` models, given ``probed`` answers that took
    ``probe_s`` seconds; ``done`` answers (default: the probed ones) are kept and never asked again."""
    per = probe_s / max(probed, 1)
    done = probed if done is None else done
    chosen = asked
    if budget is not None and per * asked * models > budget:
        chosen = max(min(asked, MIN_SAMPLES), min(asked, math.floor(budget / (per * models))))
    chosen = max(chosen, min(done, asked))  # answers already generated are used, not thrown away
    eta = per * (chosen * models - done)
    return SamplePlan(asked=asked, chosen=chosen, per_answer_s=per, eta_s=max(eta, 0.0), budget_s=budget)


def probe_and_plan(answer: Callable[[list[dict]], list[str]], records: list[dict], models: int,
                   budget: float | None) -> tuple[SamplePlan, list[str]]:
    """Answer the first :data:`PROBE_ANSWERS` records with ``answer`` (the first model), time them, and plan the
    rest; returns the plan and the probe's answers."""
    probe = records[:PROBE_ANSWERS]
    started = time.perf_counter()
    answers = answer(probe)
    return plan_samples(len(records), time.perf_counter() - started, len(probe), models, budget), answers


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def answer_in_two_parts(answer: Callable[[list[dict]], list[str]], records: list[dict], models: int,
                        budget: float | None, announce: Callable[[SamplePlan], Any],
                        batch_size: int = 0) -> tuple[list[dict], list[str]]:
    """The first model's answers: the probe, the plan (``announce``d before the long part starts), then the rest
    of the chosen records. A couple of answers in a batch of their own cost more each than answers in a full
    batch, so the first full batch after the probe is timed too and the plan revised (and announced again)
    when its rate changes the count. Returns (the chosen records, their answers)."""
    plan, answers = probe_and_plan(answer, records, models, budget)
    announce(plan)
    following = records[len(answers):min(plan.chosen, len(answers) + batch_size)]
    if len(following) > PROBE_ANSWERS:  # a batch large enough to say more than the probe did
        started = time.perf_counter()
        answers = answers + answer(following)
        revised = plan_samples(len(records), time.perf_counter() - started, len(following), models, budget,
                               done=len(answers))
        revised.measured_on = f"a batch of {len(following)}"
        if revised.chosen != plan.chosen:
            plan = revised
            announce(plan)
    rest = records[len(answers):plan.chosen]
    return records[:plan.chosen], answers[:plan.chosen] + (answer(rest) if rest else [])
