"""The stage kinds as data: one row per kind says everything the rest of the code needs to know about it — its
stage class, the recipe module that runs it, whether it trains, whether it runs once on rank 0 while the other
ranks wait, its memory-plan estimate, and the wizard page that shows its settings. The pipeline, the rank
logic, the memory plan, the recipe lookup and the wizard read this table instead of keeping lists of kinds.

Adding a stage kind = one class (``stages.py``), one row here, one recipe module (``engine/recipes/<recipe>.py``);
a new memory estimate only if none of the existing ones fits. Stdlib only, like the whole contract.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from engine.contract.errors import SpecError
from engine.contract.spec_fields import check_choice
from engine.contract.stages import (DistillStage, EvaluateStage, ExportStage, GRPOStage, QuantizeStage, SFTStage,
                                    StageSpec, read_stage)


@dataclass(frozen=True)
class StageKind:
    stage_class: type[StageSpec]  # the StageSpec subclass holding this kind's settings
    recipe: str  # module engine.recipes.<recipe> with run_stage(ctx) (and optionally validate(ctx))
    trains: bool  # updates weights: runs on every rank, resolves train.precision, gets the training page's tab
    rank_zero_only: bool  # runs once, on rank 0, while the other ranks wait at the barrier
    memory: str  # the estimate engine/models/memory_plan.py makes for it (its ESTIMATES key)
    wizard_page: str  # the wizard page showing its own settings block: "settings", "method", or "" (YAML only)
    settings: str  # that block (a field of its stage class), or "" for none


STAGE_KIND_TABLE: dict[str, StageKind] = {
    "sft": StageKind(SFTStage, recipe="sft", trains=True, rank_zero_only=False, memory="sft",
                     wizard_page="settings", settings="train"),
    "distill": StageKind(DistillStage, recipe="distill", trains=True, rank_zero_only=False, memory="distill",
                         wizard_page="method", settings="distill"),
    "grpo": StageKind(GRPOStage, recipe="grpo", trains=True, rank_zero_only=False, memory="grpo",
                      wizard_page="method", settings="grpo"),
    "quantize": StageKind(QuantizeStage, recipe="quantize", trains=False, rank_zero_only=True, memory="quantize",
                          wizard_page="method", settings="quantize"),
    "evaluate": StageKind(EvaluateStage, recipe="evaluate", trains=False, rank_zero_only=True, memory="inference",
                          wizard_page="", settings="generation"),
    "export": StageKind(ExportStage, recipe="export", trains=False, rank_zero_only=True, memory="weights",
                        wizard_page="", settings="export"),
}
STAGE_KINDS = tuple(STAGE_KIND_TABLE)

# every setting a stage can have → the classes that have it (a stage holding another kind's setting is refused)
_HOLDERS: dict[str, list[type[StageSpec]]] = {}
for _row in STAGE_KIND_TABLE.values():
    for _field in dataclasses.fields(_row.stage_class):
        _HOLDERS.setdefault(_field.name, []).append(_row.stage_class)


def stage_kind(stage: StageSpec | str) -> StageKind:
    """The table row of a stage (or of a kind's name)."""
    return STAGE_KIND_TABLE[stage if isinstance(stage, str) else stage.kind]


def build_stage(values: Any, where: str = "stage") -> StageSpec:
    """A stage of the class its ``kind`` names (sft when none is given, as specs have always read), from a spec
    file's mapping; settings of other kinds are refused by name, or dropped with a warning when they hold the
    defaults older versions wrote into every stage."""
    if isinstance(values, StageSpec):
        return values
    if not isinstance(values, dict):
        raise SpecError(f"{where}: expected a mapping of settings, got {type(values).__name__}.")
    kind = values.get("kind", "sft")
    check_choice(f"{where}.kind", kind, STAGE_KINDS)
    return read_stage(STAGE_KIND_TABLE[kind].stage_class, values, where, _HOLDERS)
