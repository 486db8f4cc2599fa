"""Out of memory, said as a sentence: recognise every form it takes (Python's MemoryError, torch's
OutOfMemoryError on CUDA/MPS, the CPU allocator's ``RuntimeError: [enforce fail at alloc_cpu.cpp] …
DefaultCPUAllocator: can't allocate memory``, an ``ENOMEM`` OSError from mmap) and say what ran out, how much
was asked for, and the memory preflight's cheapest change (engine/models/memory_plan.py).

A MemoryError's own text is usually empty, and its traceback keeps every frame's tensors alive: the caller
releases those (:func:`release`) before it builds any message, so that reporting the failure cannot fail again.
"""
from __future__ import annotations

import errno
import gc
import logging
import re
import sys
from typing import Any

log = logging.getLogger(__name__)

_OOM_TEXT = re.compile(r"out of memory|can't allocate memory|cannot allocate memory|DefaultCPUAllocator|"
                       r"Failed to allocate|std::bad_alloc", re.IGNORECASE)
_ASKED = re.compile(r"tried to allocate (\d+ bytes|[\d.]+ ?[KMGT]?i?B\b)", re.IGNORECASE)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for every way a process learns that memory ran out (host RAM, an address-space limit, a GPU)."""
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOMEM
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError / torch.cuda.OutOfMemoryError
        return True
    return isinstance(exc, RuntimeError) and bool(_OOM_TEXT.search(str(exc)[:2000]))


def release(exc: BaseException) -> None:
    """Drop what the failure still holds: the traceback's frames (their locals are the big tensors), collected
    garbage, and the CUDA allocator's cached blocks. Never raises."""
    try:
        tb = exc.__traceback__
        if tb is not None:
            import traceback

            traceback.clear_frames(tb)
        exc.__traceback__ = None
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - freeing memory is best effort; the sentence must still be said
        pass


def what_ran_out(exc: BaseException) -> tuple[str, str]:
    """("GPU memory" | "Apple GPU memory" | "memory", a note naming the address-space limit when one is set)."""
    text = str(exc)[:2000]
    if "CUDA" in text or "cuda" in type(exc).__module__:
        return "GPU memory", ""
    if "MPS" in text:
        return "Apple GPU memory", ""
    try:
        import resource  # POSIX only

        soft, unlimited = resource.getrlimit(resource.RLIMIT_AS)[0], resource.RLIM_INFINITY
    except (ImportError, OSError, ValueError):
        soft = unlimited = -1
    if soft != unlimited:
        from engine.models.memory import format_bytes

        return "memory", f"this process may use at most {format_bytes(soft)} of address space: ulimit -v"
    return "memory", ""


def asked_for(exc: BaseException) -> str:
    """How much the failed allocation wanted, when the error says it ("≈2.1 GB"), else ""."""
    match = _ASKED.search(str(exc)[:2000])
    if not match:
        return ""
    amount = match.group(1)
    if amount.endswith("bytes"):
        from engine.models.memory import format_bytes

        return format_bytes(int(amount.split()[0]))
    return amount


GENERIC_ADVICE = "use a smaller model, shorter sequences (data.max_length) or a smaller batch"


def advice(spec: Any, stage: Any, device: str) -> str:
    """The preflight's cheapest change that lowers this stage's estimated peak, as a clause; a generic one when
    there is none or the estimate itself cannot be made. Worked out before the run (:func:`advice_by_stage`):
    once memory has run out, building even a model on the meta device may fail again."""
    try:
        from engine.models.memory_plan import lowering_change

        change = lowering_change(spec, stage, device)
    except Exception as exc:  # noqa: BLE001 - the advice must never hide the failure it explains
        log.debug("no memory advice for %s: %s", getattr(stage, "name", "?"), exc)
        change = None
    if change:
        return f"the cheapest change that lowers its peak is {change}"
    return GENERIC_ADVICE


def advice_by_stage(spec: Any, device: str) -> dict[str, str]:
    """Each stage's advice, worked out while memory is plentiful (the pipeline's preflight keeps it)."""
    return {stage.name: advice(spec, stage, device) for stage in spec.stages}


def sentence(exc: BaseException, where: str, hint: str = "", run_id: str = "") -> str:
    """One sentence: what ran out, where, how much was asked for, and what to change (``hint``, from
    :func:`advice`; without one, the generic advice of a process that is not a run)."""
    asked = asked_for(exc)
    what, limit = what_ran_out(exc)
    notes = "; ".join(n for n in (f"it asked for {asked} more" if asked else "", limit) if n)
    head = f"{where} ran out of {what}" + (f" ({notes})" if notes else "")
    retry = ", or start a new run with that change" if hint.startswith("the cheapest change") else ""
    hint = hint or "close other programs or use a smaller model"
    if run_id:
        return (f"{head}; {hint}. The run stopped as failed and keeps its last checkpoint: free memory (close other "
                f"programs) and resume with compression-engine run --resume {run_id}{retry}.")
    return f"{head}; {hint}."
