"""What the chat service's answers with a draft model need (engine/chat/service.py): the steps of an answer timed
as (time, sequence length) — a draft-verify round adds several tokens in one step, so tokens/s comes from the
lengths, not the count of steps —, the share of draft tokens kept so far, and the locks of both models taken in
one order."""
from __future__ import annotations

import threading
import time
from typing import Any


def stop_criteria(event: threading.Event, stamps: list[tuple[float, int]]) -> Any:
    """A StoppingCriteria that records (when, sequence length) after each step — one token, or with a draft
    model the tokens of one draft-verify round — and ends generation once ``event`` is set."""
    import torch
    from transformers import StoppingCriteria

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            stamps.append((time.perf_counter(), int(input_ids.shape[1])))
            # input_ids: (batch, seq); one flag per sequence
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device)

    return _Stop()


def speed(stamps: list[tuple[float, int]]) -> float | None:
    """Tokens per second after the first step (its prefill is the first-token latency), from (time, length)
    stamps: a draft-verify round adds several tokens in one step."""
    if len(stamps) < 2 or stamps[-1][0] <= stamps[0][0]:
        return None
    return round((stamps[-1][1] - stamps[0][1]) / (stamps[-1][0] - stamps[0][0]), 2)


def share(count: Any) -> float | None:
    """The share of draft tokens kept so far (None before the first round)."""
    return round(count.accepted / count.proposed, 4) if count.proposed else None


def lock_all(models: list[Any], req: Any) -> list[Any] | None:
    """Each model's lock, taken in name order (two requests drafting for each other cannot deadlock); None,
    with none held, when the request is stopped while it waits."""
    held: list[Any] = []
    for model in sorted(models, key=lambda m: m.name):
        if not wait_unless_stopped(lambda t, m=model: m.lock.acquire(timeout=t), req):
            for other in held:
                other.lock.release()
            return None
        held.append(model)
    return held


def wait_unless_stopped(wait: Any, req: Any, poll_s: float = 0.1) -> bool:
    """Call ``wait(timeout)`` until it returns True (then True) or the request is stopped (then False): a stop
    sent while a request waits for its model ends it at once, not after the wait."""
    while not wait(poll_s):
        if req.stop.is_set():
            return False
    return True
