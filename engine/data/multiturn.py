"""A chat record as one training sequence with the loss on every assistant turn.

The conversation is rendered turn by turn with the model's chat template: for the k-th answer, the template of
the turns before it (with the generation prompt) must extend what was rendered so far; the answer (its text and
end-of-turn token, as :func:`engine.data.formatting.completion_text` finds it) is labelled, everything else
(system prompt, user turns, role headers) gets −100. A template that rewrites earlier turns (e.g. one that drops
the reasoning of past answers) cannot be split this way: then only the last answer is labelled, as for a
single-turn record, and the log says so once.

Too long for ``max_length``: the end is cut (later turns go first, labels stay aligned); when that would leave
no answer token — a long system prompt or first question — the single-turn rule applies to the last answer
(:func:`engine.data.formatting.truncate_pair`).
"""
from __future__ import annotations

import logging
from typing import Any

from engine.data.formatting import (
    IGNORE_INDEX,
    _encode,
    _prompt_text,
    completion_text,
    encode_prompt,
    truncate_pair,
)

log = logging.getLogger(__name__)
_warned: set[str] = set()


class _NotIncremental(ValueError):
    """The template renders a shorter conversation as something that is not a prefix of the longer one."""


def conversation_segments(tokenizer: Any, messages: list[dict[str, str]]) -> list[tuple[str, bool]]:
    """(text, is_answer) pieces whose concatenation is the conversation as the model sees it."""
    segments: list[tuple[str, bool]] = []
    done = ""
    for k, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        prompt = _prompt_text(tokenizer, messages[:k])
        if not prompt.startswith(done):
            raise _NotIncremental
        answer = completion_text(tokenizer, messages[:k], prompt, turn["content"])
        segments += [(prompt[len(done):], False), (answer, True)]
        done = prompt + answer
    return segments


def _last_answer_only(tokenizer: Any, messages: list[dict[str, str]]) -> list[tuple[str, bool]]:
    prompt = _prompt_text(tokenizer, messages[:-1])
    return [(prompt, False), (completion_text(tokenizer, messages[:-1], prompt, messages[-1]["content"]), True)]


def encode_conversation(tokenizer: Any, record: dict, max_length: int) -> dict[str, list[int]]:
    """input_ids, attention_mask and labels of a chat record (its ``response`` is the last answer, so a
    teacher's answer put there by sequence-level KD is what is learnt)."""
    messages = [dict(t) for t in record["messages"][:-1]] + [{"role": "assistant", "content": record["response"]}]
    try:
        segments = conversation_segments(tokenizer, messages)
    except _NotIncremental:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        if name not in _warned:
            _warned.add(name)
            log.warning("the chat template of %s rewrites earlier turns; multi-turn records are trained on their "
                        "last answer only", name)
        segments = _last_answer_only(tokenizer, messages)
    input_ids: list[int] = []
    labels: list[int] = []
    for i, (text, is_answer) in enumerate(segments):
        ids = encode_prompt(tokenizer, text) if i == 0 else _encode(tokenizer, text)
        input_ids += ids
        labels += ids if is_answer else [IGNORE_INDEX] * len(ids)
    if len(input_ids) > max_length:
        if any(label != IGNORE_INDEX for label in labels[:max_length]):
            input_ids, labels = input_ids[:max_length], labels[:max_length]
        else:  # nothing to learn in the first max_length tokens: fit the last answer as a single turn would
            prompt_text, answer_text = _last_answer_only(tokenizer, messages)
            prompt_ids, target_ids = truncate_pair(encode_prompt(tokenizer, prompt_text[0]),
                                                   _encode(tokenizer, answer_text[0]), max_length)
            input_ids, labels = prompt_ids + target_ids, [IGNORE_INDEX] * len(prompt_ids) + target_ids
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}
