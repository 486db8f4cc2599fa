"""What the studio knows about one run, built from its protocol events — plain Python and numpy, no Qt.

:class:`MetricStore` keeps every metric curve in growable numpy buffers (appending is amortised O(1), so 100,000
points per curve cost nothing); widgets redraw from it on a timer, never per event. :class:`RunState` folds the
other events (status, progress, samples, logs, errors, done) into the few fields the monitor shows.
"""
from __future__ import annotations

import collections
import math
import re
from dataclasses import dataclass, field
from collections.abc import Iterable

import numpy as np

from engine.contract.metric_names import metric_group
from engine.contract.protocol import FINAL_STATES, Event
from studio.model.pipeline_clock import PipelineClock, stage_share


def ema_chunked(y: np.ndarray, weight: float, prev: float) -> np.ndarray:
    """s_i = w·s_(i−1) + (1−w)·y_i from s_(−1) = prev, vectorised in chunks: within a chunk
    s_i = w^(i+1)·(prev + (1−w)·Σ_(j≤i) y_j·w^(−j−1)); chunks stay short enough that w^(−k) cannot overflow."""
    out = np.empty_like(y)
    k = int(min(1024, max(1, 600 / np.log(1 / weight))))  # w^(-k) ≤ e^600 < 1e308
    powers = weight ** np.arange(1, k + 1, dtype=np.float64)  # w^(i+1)
    for start in range(0, len(y), k):
        chunk = y[start:start + k]
        p = powers[: len(chunk)]
        s = p * (prev + (1 - weight) * np.cumsum(chunk / p))
        out[start:start + len(chunk)] = s
        prev = s[-1]
    return out


class MetricSeries:
    """One curve: x (step) and y in doubling numpy buffers, plus an incrementally maintained EMA."""

    def __init__(self, capacity: int = 256) -> None:
        self._x = np.empty(capacity, dtype=np.float64)
        self._y = np.empty(capacity, dtype=np.float64)
        self._ema = np.empty(capacity, dtype=np.float64)
        self.size = 0
        self.version = 0  # bumped on every change; a widget redraws a curve only when it moved on
        self._ema_weight = 0.0
        self._ema_done = 0  # points whose EMA is up to date for _ema_weight
        self.attempt = 0  # MetricStore.attempt of the last point

    def append(self, x: float, y: float) -> None:
        if self.size == len(self._x):
            for name in ("_x", "_y", "_ema"):
                old = getattr(self, name)
                new = np.empty(2 * len(old), dtype=np.float64)
                new[: self.size] = old[: self.size]
                setattr(self, name, new)
        self._x[self.size] = x
        self._y[self.size] = y
        self.size += 1
        self.version += 1

    def truncate_from(self, x: float) -> None:
        """Forget the points at ``x`` and after: a resumed stage goes on from its checkpoint, and the steps the
        interrupted attempt logged after that checkpoint were thrown away with it."""
        keep = int(np.searchsorted(self.x, x, side="left"))
        if keep < self.size:
            self.size = keep
            self._ema_done = min(self._ema_done, keep)
            self.version += 1

    def extend(self, xs: Iterable[float], ys: Iterable[float]) -> None:
        for x, y in zip(xs, ys):
            self.append(x, y)

    @property
    def x(self) -> np.ndarray:
        return self._x[: self.size]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self.size]

    def smoothed(self, weight: float) -> np.ndarray:
        """Exponential moving average with ``weight`` in [0, 1) (0 = raw); only new points are computed unless
        the weight changed."""
        if weight <= 0:
            return self.y
        if weight != self._ema_weight:
            self._ema_weight, self._ema_done = weight, 0
        start = self._ema_done
        if start < self.size:
            prev = self._ema[start - 1] if start else self._y[0]
            self._ema[start:self.size] = ema_chunked(self._y[start:self.size], weight, prev)
            self._ema_done = self.size
        return self._ema[: self.size]

    def nearest(self, x: float) -> tuple[float, float] | None:
        """The point whose x is closest to ``x`` (hover read-out); None for an empty curve."""
        if not self.size:
            return None
        xs = self.x
        i = int(np.clip(np.searchsorted(xs, x), 1, self.size - 1)) if self.size > 1 else 0
        if self.size > 1 and abs(xs[i - 1] - x) <= abs(xs[i] - x):
            i -= 1
        return float(xs[i]), float(self._y[i])


SWEEP_X = "sweep/learning_rate"  # the x of a sweep's summary points


def sweep_rate(sweep: object) -> float | None:
    """The learning rate of an event's ``sweep`` point, or None when it is no (well-formed) sweep point."""
    rate = sweep.get("learning_rate") if isinstance(sweep, dict) else None
    return float(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool) else None


def sweep_key(stage: str, sweep: dict) -> str:
    """The series name of one learning rate of a stage's sweep: its own colour and legend entry."""
    return f"{stage} (lr {sweep_rate(sweep):g})"


SWEEP_LOG = re.compile(r"^sweep (\d+)/(\d+): learning rate (\S+)$")  # engines that did not tag their events


class MetricStore:
    """Curves keyed by label (``[run · ]stage · metric``), each tagged with its plot group."""

    def __init__(self) -> None:
        self.series: dict[str, MetricSeries] = {}
        self.groups: dict[str, str] = {}
        self.version = 0
        # which start of the engine the points come from (a resume is a new attempt); steps going back within one
        # attempt are a learning-rate sweep's next trial, across attempts a resume from an earlier checkpoint
        self.attempt = 0

    def add(self, stage: str, step: float, values: dict, prefix: str = "", sweep: dict | None = None) -> None:
        """Append one metric event's values. A sweep's summary (``sweep/*`` with ``sweep/learning_rate``) is one
        point per learning rate, the rate as x; a sweep point's curves (``sweep``) are series of their own, so
        that the second rate's steps do not run back into the first's."""
        if isinstance(values.get(SWEEP_X), (int, float)):
            step = float(values[SWEEP_X])
            values = {k: v for k, v in values.items() if k != SWEEP_X}
        elif sweep_rate(sweep) is not None:
            stage = sweep_key(stage, sweep)
        for name, value in values.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                continue  # null (NaN on the engine side) and non-numbers are not plotted
            label = " · ".join(p for p in (prefix, stage, name) if p)
            series = self.series.get(label)
            if series is None:
                series = self.series[label] = MetricSeries()
                self.groups[label] = metric_group(name)
            elif series.attempt < self.attempt and series.size and step <= series.x[-1]:
                series.truncate_from(float(step))  # a resumed attempt re-logs from its checkpoint on
            series.attempt = self.attempt
            series.append(float(step), float(value))
        self.version += 1

    def labels_in(self, group: str) -> list[str]:
        return [label for label, g in self.groups.items() if g == group]

    def clear(self) -> None:
        self.series.clear()
        self.groups.clear()
        self.version += 1


@dataclass
class Sample:
    stage: str
    step: int
    prompt: str
    completion: str
    rewards: dict
    model: str = ""  # evaluation samples say which model answered
    reference: str = ""


@dataclass
class RunState:
    """The monitor's view of a run: everything but the curves (those go to ``metrics``)."""

    run_id: str = ""
    state: str = "starting"  # starting, running, cancelling, finished, cancelled, failed
    stage: str = ""
    message: str = ""
    progress: dict = field(default_factory=dict)
    last_error: str = ""
    error_detail: str = ""
    summary: dict = field(default_factory=dict)
    artifacts: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=5000))
    metrics: MetricStore = field(default_factory=MetricStore)
    events_seen: int = 0
    last_seq: int = 0  # the highest event seq folded in (a view catching up from events.jsonl skips the rest)
    log_total: int = 0  # lines ever added (the deque forgets old ones; views append the new ones)
    pipeline: PipelineClock = field(default_factory=PipelineClock)  # whole-run progress and ETA
    sweep: dict = field(default_factory=dict)  # the sweep point running now, as logged (older engines)
    warnings: list = field(default_factory=list)  # the engine's own warning log events of this attempt, in full

    def add_log(self, line: str) -> None:
        self.log.append(line)
        self.log_total += 1

    def new_log_lines(self, seen: int) -> list[str]:
        """Lines added after the first ``seen`` (as many as the deque still holds)."""
        count = min(self.log_total - seen, len(self.log))
        return list(self.log)[len(self.log) - count:] if count > 0 else []

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    def apply(self, event: Event, prefix: str = "") -> None:
        """Fold one event in; ``prefix`` labels the curves (used when several runs share one plot)."""
        self.events_seen += 1
        self.last_seq = max(self.last_seq, event.seq)
        d = event.data
        if event.run_id and not self.run_id:
            self.run_id = event.run_id
        if event.type == "hello":  # a run's first start, or a resume of it: what the last attempt said is over
            self.state = "running"
            self.metrics.attempt += 1
            self.pipeline.on_hello(event.time)
            self.last_error = self.error_detail = ""
            self.progress, self.sweep, self.warnings = {}, {}, []
        elif event.type == "status":
            self.state = d.get("state", self.state)
            if isinstance(d.get("index"), int) and d.get("stage") != self.progress.get("stage"):
                self.progress = {}  # a new stage: the last one's "12/12 · 100 %" is not this one's
                self.sweep = {}
            self.stage = d.get("stage") or self.stage
            self.message = d.get("message", "")
            self.pipeline.on_status(d, event.time)
        elif event.type == "progress":
            self.progress = stage_share(d, d.get("sweep") or self._logged_sweep(d.get("stage", "")))
            self.stage = d.get("stage") or self.stage
            self.pipeline.on_progress(self.progress, event.time)
        elif event.type == "metric" and d.get("model"):
            pass  # one model's final scores (the evaluate stage): the evaluation table shows them, not a curve
        elif event.type == "metric":
            stage = d.get("stage", "")
            self.metrics.add(stage, d.get("step", 0), d.get("values", {}), prefix,
                             d.get("sweep") or self._logged_sweep(stage))
        elif event.type == "sample":
            self.samples.append(Sample(d.get("stage", ""), int(d.get("step", 0)), str(d.get("prompt", "")),
                                       str(d.get("completion", "")), dict(d.get("rewards") or {}),
                                       str(d.get("model", "")), str(d.get("reference") or "")))
        elif event.type == "log":
            self.add_log(f"[{d.get('level', 'info')}] {d.get('message', '')}")
            if d.get("level") == "warning" and str(d.get("message", "")) not in self.warnings:
                self.warnings.append(str(d.get("message", "")))  # shown whole above the tabs, not as a cut line
            self._note_sweep(str(d.get("message", "")))
        elif event.type == "artifact":
            self.artifacts.append(dict(d))
        elif event.type == "error":
            self.last_error = str(d.get("message", "error"))
            self.error_detail = str(d.get("detail", ""))
            self.add_log(f"[error] {self.last_error}")
        elif event.type == "done":
            self.state = d.get("status", "finished")
            self.summary = dict(d.get("summary", {}))
            self.pipeline.on_done(self.state, event.time)

    def _note_sweep(self, message: str) -> None:
        """An engine that did not tag its events with their sweep point still logged "sweep 2/3: learning rate
        0.002" before each rate's training: the point of the stage running now."""
        match = SWEEP_LOG.match(message)
        if match:
            try:
                rate = float(match[3])
            except ValueError:
                return
            self.sweep = {"stage": self.stage, "index": int(match[1]) - 1, "count": int(match[2]),
                          "learning_rate": rate}

    def _logged_sweep(self, stage: str) -> dict | None:
        return self.sweep if self.sweep and self.sweep.get("stage") == stage else None

    def fail(self, message: str) -> None:
        """The engine died without a ``done`` event."""
        self.state = "failed"
        self.last_error = self.last_error or message
        if message != self.last_error:
            self.add_log(f"[error] {message}")


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or not math.isfinite(seconds):
        return "—"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
