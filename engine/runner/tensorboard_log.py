"""TensorBoard event files for every run, fed from the event stream itself, so that everything the studio plots —
training loss, KD's cross-entropy and divergence, GRPO's per-reward means and KL, the learning rate, evaluation
scores, quantization ratios — lands in TensorBoard under the protocol's metric names (``train/loss``,
``grpo/reward/answer_correct``, ``eval/rougeL`` …), not only what a Trainer logs.

Layout: ``runs/<id>/tensorboard/<stage>/`` (one TensorBoard "run" per stage, as stages restart their step count;
``<stage>/lr-<rate>/`` per learning rate of a sweep, for the same reason),
and ``tensorboard/<stage>/<model>/`` for per-model evaluation scores; GRPO samples are written as text. Open it
with ``tensorboard --logdir <run folder>/tensorboard``.

Only the process that writes the run's events writes these files (rank 0 under several processes).
"""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

from engine.contract.protocol import Event

log = logging.getLogger(__name__)

FLUSH_SECS = 2  # TensorBoard reads new points as they are flushed; a run is watched live


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)) or "_"


def _sweep_part(data: dict) -> str:
    """``lr-0.0005`` for a learning-rate sweep's point: each rate's steps restart at 1, so each is a TensorBoard
    run (a folder) of its own, as each stage is."""
    sweep = data.get("sweep")
    rate = sweep.get("learning_rate") if isinstance(sweep, dict) else None
    return f"lr-{rate:g}" if isinstance(rate, (int, float)) and not isinstance(rate, bool) else ""


class TensorBoardLog:
    """An EventWriter listener: metric events → scalars, sample events → text, one writer per stage (and model)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._writers: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._broken = False

    def _writer(self, *parts: str) -> Any:
        key = "/".join(_safe(p) for p in parts if p)
        writer = self._writers.get(key)
        if writer is None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(self.folder / key), flush_secs=FLUSH_SECS)
            self._writers[key] = writer
        return writer

    def __call__(self, event: Event) -> None:
        if self._broken or event.type not in ("metric", "sample", "status"):
            return
        data = event.data
        try:
            with self._lock:
                if event.type == "metric":
                    writer = self._writer(data.get("stage", ""), data.get("model", ""), _sweep_part(data))
                    step = int(data.get("step") or 0)
                    for tag, value in (data.get("values") or {}).items():
                        if isinstance(value, (int, float)) and not isinstance(value, bool):
                            writer.add_scalar(tag, float(value), step, walltime=event.time or None)
                elif event.type == "sample":
                    rewards = ", ".join(f"{k} {v:.3g}" for k, v in (data.get("rewards") or {}).items()
                                        if isinstance(v, (int, float)))
                    text = (f"**prompt**\n\n    {data.get('prompt', '')}\n\n**completion**\n\n    "
                            f"{data.get('completion', '')}\n\n{rewards}").replace("\n", "\n    ")
                    tag = f"samples/{_safe(data['model'])}" if data.get("model") else "samples"
                    self._writer(data.get("stage", "")).add_text(tag, text, int(data.get("step") or 0))
                elif data.get("state") in ("finished", "cancelled", "failed", "cancelling"):
                    self.flush()
        except Exception as exc:  # noqa: BLE001 — a logging side channel must never stop a run
            self._broken = True
            log.warning("TensorBoard logging stopped (%s: %s); the run goes on", type(exc).__name__, exc)

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        with self._lock:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()


def attach(events: Any, folder: Path) -> TensorBoardLog | None:
    """Add a TensorBoardLog writing under ``folder`` (a run's ``tensorboard/``) to an EventWriter; None (and a log
    line) when the
    tensorboard package is missing, as the run does not depend on it."""
    try:
        import torch.utils.tensorboard  # noqa: F401  (imports the tensorboard package)
    except ImportError as exc:
        log.warning("no TensorBoard event files for this run (%s); pip install tensorboard", exc)
        return None
    listener = TensorBoardLog(Path(folder))
    events.listeners.append(listener)
    return listener
