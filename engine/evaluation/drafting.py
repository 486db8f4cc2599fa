"""A student as its teacher's draft model (speculative decoding): how often the teacher accepts the student's draft
tokens, and how much faster greedy decoding gets with the draft than without it.

Decoding with the draft is transformers' assisted generation (``teacher.generate(..., assistant_model=student)``;
``tokenizer`` + ``assistant_tokenizer`` when the two tokenize differently). Greedy assisted generation keeps a draft
token only where it equals the teacher's own greedy choice, so its output is the teacher's plain greedy output
(the report counts the prompts where both agree: float rounding of a batched verification step can in principle
flip a near-tie).

Acceptance is counted, not estimated: transformers calls the candidate generator's ``update_candidate_strategy``
once per draft-verify round with the round's scores (``candidate_length + 1`` positions, in the teacher's tokens)
and the number of draft tokens the teacher kept; :func:`counting` wraps the generator the teacher builds for each
call and sums both. acceptance = kept ÷ proposed draft tokens, over every round of every prompt. Draft tokens
past a stop token or the length limit count as proposed but not kept (transformers crops them), as they cost the
same work.

Each prompt is decoded one at a time (assisted generation supports batch size 1 only), plain first, then with the
draft; tokens/s = new tokens ÷ wall seconds of each, summed over the prompts.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from engine.core import heartbeat
from engine.contract.spec import GenerationSpec
from engine.evaluation.generation import (encode_prompt, fit_to_context, generation_config, stop_token_ids,
                                          _until_stop)

#: held-out prompts that measure a draft when the stage says 0: one at a time, twice each (plain and drafted)
DRAFT_PROMPTS = {"cpu": 8, "gpu": 32}


def draft_prompt_count(asked: int, device: str) -> int:
    """The prompts a draft measurement uses: ``asked``, or when 0 a count sized to the device (DRAFT_PROMPTS)."""
    return asked if asked > 0 else DRAFT_PROMPTS["cpu" if device == "cpu" else "gpu"]


@dataclasses.dataclass
class DraftCount:
    """Sums over every draft-verify round: draft tokens proposed and kept, and the rounds."""

    proposed: int = 0
    accepted: int = 0
    rounds: int = 0


@dataclasses.dataclass
class DraftReport:
    """One student measured as the teacher's draft on ``prompts`` prompts."""

    prompts: int
    count: DraftCount
    plain_tokens: int
    plain_s: float
    drafted_tokens: int
    drafted_s: float
    identical: int  # prompts whose drafted answer equals the plain greedy one
    tokenizers: str  # "same" or "different"

    @property
    def acceptance(self) -> float | None:
        return self.count.accepted / self.count.proposed if self.count.proposed else None

    @property
    def speedup(self) -> float | None:
        if not (self.plain_tokens and self.drafted_tokens and self.plain_s > 0 and self.drafted_s > 0):
            return None
        return (self.drafted_tokens / self.drafted_s) / (self.plain_tokens / self.plain_s)

    def as_dict(self) -> dict:
        """The eval.json ``draft`` entry of one student."""
        def rate(tokens: int, seconds: float) -> float | None:
            return round(tokens / seconds, 2) if seconds > 0 else None

        acceptance, speedup = self.acceptance, self.speedup
        return {"acceptance": None if acceptance is None else round(acceptance, 4),
                "speedup": None if speedup is None else round(speedup, 3),
                "proposed": self.count.proposed, "accepted": self.count.accepted, "rounds": self.count.rounds,
                "prompts": self.prompts, "identical": self.identical, "tokenizers": self.tokenizers,
                "tokens_per_s_plain": rate(self.plain_tokens, self.plain_s),
                "tokens_per_s_drafted": rate(self.drafted_tokens, self.drafted_s)}


@contextlib.contextmanager
def counting(teacher: Any, count: DraftCount) -> Iterator[None]:
    """While open, every candidate generator ``teacher.generate`` builds reports its rounds into ``count``. The
    wrap is an instance attribute over transformers' ``_get_candidate_generator``, removed on exit."""
    build = teacher._get_candidate_generator

    def counted_build(*args: Any, **kwargs: Any) -> Any:
        generator = build(*args, **kwargs)
        update = generator.update_candidate_strategy

        def counted(input_ids: Any, scores: Any, num_matches: Any) -> Any:
            count.proposed += int(scores.shape[1]) - 1  # the round's draft length, in the teacher's tokens
            count.accepted += int(num_matches)
            count.rounds += 1
            return update(input_ids, scores, num_matches)

        generator.update_candidate_strategy = counted
        return generator

    teacher._get_candidate_generator = counted_build
    try:
        yield
    finally:
        del teacher._get_candidate_generator


def same_tokenizer(a: Any, b: Any) -> bool:
    """Whether two tokenizers map text to the same ids (then the draft needs no translation)."""
    return a is b or (type(a).__name__ == type(b).__name__ and a.get_vocab() == b.get_vocab())


def draft_kwargs(teacher_tok: Any, student: Any, student_tok: Any) -> dict:
    """``generate`` keyword arguments that make ``student`` the draft (the tokenizers too when they differ)."""
    if same_tokenizer(teacher_tok, student_tok):
        return {"assistant_model": student}
    return {"assistant_model": student, "tokenizer": teacher_tok, "assistant_tokenizer": student_tok}


@torch.inference_mode()
def measure_draft(teacher: Any, teacher_tok: Any, student: Any, student_tok: Any, prompts: list[str],
                  gen: GenerationSpec, device: str,
                  on_progress: Callable[[int, int], None] | None = None) -> DraftReport:
    """``student`` as ``teacher``'s draft on ``prompts`` (strings made by ``prompt_texts`` with the teacher's
    tokenizer), greedy whatever ``gen`` says: acceptance is defined for the teacher's greedy decoding."""
    stop_ids = stop_token_ids(teacher, teacher_tok)
    pad_id = teacher_tok.pad_token_id if teacher_tok.pad_token_id is not None else stop_ids[0]
    encoded, gen = fit_to_context(teacher, [encode_prompt(teacher_tok, p) for p in prompts],
                                  dataclasses.replace(gen, greedy=True))
    config = generation_config(gen, pad_id, stop_ids)
    draft = draft_kwargs(teacher_tok, student, student_tok)
    count, totals, identical = DraftCount(), [0, 0.0, 0, 0.0], 0
    teacher.eval()
    student.eval()
    with heartbeat.activity(f"timing {len(prompts)} answers with and without the draft"):
        for n, ids in enumerate(encoded):
            input_ids = torch.tensor([ids], dtype=torch.long, device=device)
            mask = torch.ones_like(input_ids)
            inputs = {"input_ids": input_ids, "attention_mask": mask, "generation_config": config}
            plain, plain_s = _timed(teacher.generate, **inputs)
            with counting(teacher, count):
                drafted, drafted_s = _timed(teacher.generate, **inputs, **draft)
            plain_new = _until_stop(plain[0, len(ids):].tolist(), stop_ids)
            drafted_new = _until_stop(drafted[0, len(ids):].tolist(), stop_ids)
            identical += plain_new == drafted_new
            totals[0] += len(plain_new)
            totals[1] += plain_s
            totals[2] += len(drafted_new)
            totals[3] += drafted_s
            if on_progress is not None:
                on_progress(n + 1, len(encoded))
    return DraftReport(len(encoded), count, int(totals[0]), totals[1], int(totals[2]), totals[3], identical,
                       "same" if "tokenizer" not in draft else "different")


def _timed(call: Callable[..., Any], **kwargs: Any) -> tuple[Any, float]:
    """(call(**kwargs), its wall seconds), the GPU's queue drained at both ends."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = call(**kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - started
