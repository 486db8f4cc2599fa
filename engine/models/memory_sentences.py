"""The sentences a memory plan (engine/models/memory_plan.py) is reported in: why its verdict is unknown, and the
refusal of a stage that does not fit with the cheapest change that does; split from memory_plan.py, which
estimates."""

from __future__ import annotations

from engine.models import memory


def unknown_sentence(report: dict) -> str:
    """Why a plan's verdict is unknown: the first stage that could not be estimated, and its reason."""
    stage = next(s for s in report["stages"] if s["fits"] is None)
    reason = stage.get("error", "").removesuffix(".")
    return (f"the memory of stage {stage['stage']} cannot be estimated ({reason}), so whether the run fits is "
            "unknown; the run itself will check again when it loads the model.")


def refusal(report: dict) -> str | None:
    """The sentence that refuses a plan that does not fit (None when it fits)."""
    bad = next((s for s in report["stages"] if s["fits"] is False), None)
    if bad is None:
        return None
    where = "GPU memory" if report["device"] == "cuda" else "memory"
    parts = ", ".join(f"{k} {memory.format_bytes(v)}" for k, v in sorted(bad["parts"].items(), key=lambda kv: -kv[1]))
    fix = bad.get("fix")
    hint = (f"the cheapest change that fits: {bad['stage']}: {fix['change']} ({memory.format_bytes(fix['peak_bytes'])})"
            if fix else "no single change fits; use a smaller model or a larger device")
    return (f"stage {bad['stage']} needs {memory.format_bytes(bad['peak_bytes'])} of {where} at its peak ({parts}) "
            f"but {memory.format_bytes(report['available_bytes'])} is available; {hint}.")
