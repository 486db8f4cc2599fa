"""What a stage recipe is handed: the spec, its stage, the run folder, the event writer, the cancel flag, and
the way to turn a model reference (teacher, student, an earlier stage's name, a folder) into something loadable.

Recipes have one entry point each::

    def run_stage(ctx: RunContext) -> StageResult

and read top to bottom: set up from ``ctx``, train or measure, save into ``ctx.output_dir``.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.contract.errors import Diverged, EngineError, StageCancelled  # noqa: F401 (re-exported)
from engine.contract.protocol import EventWriter
from engine.contract.runs import RunPaths
from engine.contract.spec import BASE_MODELS, ModelSpec, RunSpec, StageSpec


@dataclass
class StageResult:
    model_dir: Path | None = None  # the stage's output model, if it made one
    scores: dict = field(default_factory=dict)  # headline numbers for the run index (e.g. eval/rougeL)
    summary: dict = field(default_factory=dict)  # anything else worth putting in the done event


@dataclass
class RunContext:
    spec: RunSpec
    stage: StageSpec
    paths: RunPaths | None  # None during preflight, before the run folder exists
    events: EventWriter
    cancel: threading.Event = field(default_factory=threading.Event)
    device: str = "cpu"
    cache: dict[str, Any] = field(default_factory=dict)  # shared across stages of one process (data, etc.)
    sweep: dict | None = None  # {index, count, learning_rate} while a learning-rate sweep trains one of its rates

    @property
    def output_dir(self) -> Path:
        return self.paths.model(self.stage.name)

    @property
    def checkpoint_dir(self) -> Path:
        return self.paths.checkpoints(self.stage.name)

    @property
    def work_dir(self) -> Path:
        path = self.paths.stage_dir(self.stage.name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def model_spec(self, ref: str) -> ModelSpec:
        """A loadable ModelSpec for a reference: a base model, an earlier stage's saved output, or a path."""
        if ref in BASE_MODELS:
            return getattr(self.spec, ref)
        names = [s.name for s in self.spec.stages]
        if ref in names:
            folder = self.paths.model(ref)
            if not (folder / "config.json").exists():
                raise EngineError(f"stage {self.stage.name!r} needs the model of stage {ref!r}, which has not been "
                                  f"saved in {folder}; run that stage first.")
            base = self._base_of(ref)
            return ModelSpec(source=str(folder), dtype=base.dtype, load_in_4bit=False)
        return ModelSpec(source=ref)

    def _base_of(self, ref: str) -> ModelSpec:
        """The base model a stage's output descends from (to inherit its dtype)."""
        seen = set()
        while ref not in BASE_MODELS and ref not in seen:
            seen.add(ref)
            try:
                ref = self.spec.stage(ref).model
            except KeyError:
                return ModelSpec(source=ref)
        return getattr(self.spec, ref) if ref in BASE_MODELS else ModelSpec(source=ref)

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise StageCancelled(self.stage.name)
