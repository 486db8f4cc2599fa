"""One arena answer, free of Qt: the sampling settings every pane shares (``Sampling``) and a turn (``Turn``: the
user's message, the pane's answer and the numbers the chat service reported, worded by ``Turn.stats``); split from
arena_state.py, which keeps the panes, the reference and the blind round."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field


@dataclass
class Sampling:
    """Generation settings shared by every pane (the chat service validates them like GenerationSpec)."""

    greedy: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 128
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Turn:
    """One user message and one pane's answer to it, with the numbers the service reported."""

    user: str
    request_id: str = ""
    answer: str = ""
    status: str = "streaming"  # streaming | finished | stopped | error
    error: str = ""
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    ttft_s: float | None = None
    tokens_per_s: float | None = None  # live while streaming, then the service's final number
    draft: str = ""  # the draft model's label when another pane's model drafted this answer
    draft_acceptance: float | None = None  # the share of its draft tokens kept (live, then final)
    rouge_l: float | None = None  # against the reference pane's answer to the same turn
    started: float = field(default_factory=time.time)

    @property
    def is_open(self) -> bool:
        return self.status == "streaming"

    def stats(self, reference: str, *, rouge_digits: int = 2, every_state: bool = False, timings: bool = True) -> str:
        """'31 tokens · first token 0.12 s · 35.1 tok/s · ROUGE-L 0.82 vs teacher' (what is known so far). No
        ROUGE-L without a reference name (a blind round would reveal it). A stopped answer says so; with
        ``every_state`` (the export) any unfinished one does, with its error. Without ``timings`` (a blind round
        before the reveal) no first-token latency or speed: a 4-bit or a 10× smaller model gives itself away."""
        parts = []
        if self.completion_tokens is not None:
            parts.append(f"{self.completion_tokens} token{'' if self.completion_tokens == 1 else 's'}")
        if self.ttft_s is not None and timings:
            parts.append(f"first token {self.ttft_s:.2f} s")
        if self.tokens_per_s is not None and timings:
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.draft and timings:  # a drafted answer is faster: hidden in a blind round like the speed
            kept = "–" if self.draft_acceptance is None else f"{100 * self.draft_acceptance:.0f} %"
            parts.append(f"draft {self.draft}: {kept} kept")
        if self.rouge_l is not None and reference:
            parts.append(f"ROUGE-L {self.rouge_l:.{rouge_digits}f} vs {reference}")
        if self.status == "stopped" or (every_state and self.status != "finished"):
            parts.append(self.status + (f": {self.error}" if every_state and self.error else ""))
        return " · ".join(parts)
