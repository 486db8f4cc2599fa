"""Stage recipes: one module per stage kind, each with ``run_stage(ctx) -> StageResult`` (and optionally
``validate(ctx)``, run by the preflight before any stage starts).

:func:`recipe_for` is the registry: a new stage kind is a new module, one line here, and its kind in
``engine.contract.spec.STAGE_KINDS`` (a test checks that every kind has a recipe). Modules are imported on demand
because each pulls in its own libraries (TRL, bitsandbytes, …).
"""
from __future__ import annotations

from types import ModuleType


def recipe_for(kind: str) -> ModuleType:
    """The recipe module of a stage kind."""
    if kind == "sft":
        from engine.recipes import sft as module
    elif kind == "distill":
        from engine.recipes import distill as module
    elif kind == "grpo":
        from engine.recipes import grpo as module
    elif kind == "quantize":
        from engine.recipes import quantize as module
    elif kind == "evaluate":
        from engine.recipes import evaluate as module
    elif kind == "export":
        from engine.recipes import export as module
    else:
        raise KeyError(f"no recipe for stage kind {kind!r}")
    return module
