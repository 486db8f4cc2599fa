"""Stage recipes: one module per stage kind, each with ``run_stage(ctx) -> StageResult`` (and optionally
``validate(ctx)``, run by the preflight before any stage starts).

:func:`recipe_for` is the registry: it reads the kind's ``recipe`` from the contract's table
(``engine/contract/stage_kinds.py``), so a new stage kind is a new module here and a row there (a test checks
that every row's module exists and has ``run_stage``). Modules are imported on demand because each pulls in its
own libraries (TRL, bitsandbytes, …).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from engine.contract.stage_kinds import STAGE_KIND_TABLE


def recipe_for(kind: str) -> ModuleType:
    """The recipe module of a stage kind."""
    if kind not in STAGE_KIND_TABLE:
        raise KeyError(f"no recipe for stage kind {kind!r}")
    return importlib.import_module(f"{__name__}.{STAGE_KIND_TABLE[kind].recipe}")
