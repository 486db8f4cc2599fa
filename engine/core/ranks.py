"""Who this process is among the ranks of a multi-process run, and staying in step with the other ranks.

One process alone is rank 0 of 1: every helper here is then a no-op, and torch is never imported by them in a
process that has not imported it already (the launcher parent stays light)."""
from __future__ import annotations

import os
import sys
from typing import Any, TypeVar
from collections.abc import Callable

from engine.contract.stage_kinds import stage_kind

T = TypeVar("T")


def rank() -> int:
    """This process's global rank (0 when not launched as one of several)."""
    return int(os.environ.get("RANK", "0") or 0)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    """Whether this process writes the run's events, models and files (rank 0, or the only process)."""
    return rank() == 0


def _distributed() -> Any | None:
    """torch.distributed when a process group of more than one rank is up, else None (never imports torch in a
    process that has not already imported it: the launcher parent stays light)."""
    if world_size() <= 1 or "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def wait_for_everyone() -> None:
    """A barrier across ranks (e.g. until rank 0 has saved the model the next stage loads); a no-op alone."""
    dist = _distributed()
    if dist is not None:
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (one tiny all-reduce; the flag itself alone)."""
    dist = _distributed()
    if dist is None:
        return flag
    import torch

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1 if flag else 0], device=device)  # [1]
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def run_stage_on_ranks(kind: str, run: Callable[[], T]) -> T | None:
    """Run one pipeline stage the rank-aware way: training stages on every rank (the trainer shards the data),
    the kinds the contract's table marks ``rank_zero_only`` (evaluation, quantization, export) once on rank 0.
    Every rank then waits at one barrier, so the next stage finds the model rank 0 saved. Returns None on the
    ranks that skipped the stage."""
    result = run() if not stage_kind(kind).rank_zero_only or is_main_process() else None
    wait_for_everyone()
    return result
