"""Records → model inputs: chat messages, prompt strings for generation, and tokenized SFT examples.

The prompt is the model's own chat template (``apply_chat_template(..., add_generation_prompt=True)``) around
the preset's user message; the target is what the template puts after it for an assistant turn (the response
and the end-of-turn token, e.g. ``<|im_end|>``). Tokenizers without a chat template get a plain
``### Instruction / ### Response`` layout and the eos token. Loss is on target tokens only (labels −100 on the
prompt).

Truncation to ``max_length`` tokens: the prompt is kept whole and the end of the response is cut; when the
prompt alone leaves fewer than ``min(len(response), max_length // 4)`` tokens for the response, the prompt is cut
from the left (its start is dropped, the end — the question's last words and the assistant header — kept) so
that this many response tokens still fit and every example teaches something.

Chat records (multi-turn) get the loss on every assistant turn. The conversation is rendered turn by turn with the
model's chat template: for the k-th answer, the template of
the turns before it (with the generation prompt) must extend what was rendered so far; the answer (its text and
end-of-turn token, as :func:`completion_text` finds it) is labelled, everything else
(system prompt, user turns, role headers) gets −100. A template that rewrites earlier turns (e.g. one that drops
the reasoning of past answers) cannot be split this way: then only the last answer is labelled, as for a
single-turn record, and the log says so once.

Too long for ``max_length``: the end is cut (later turns go first, labels stay aligned); when that would leave
no answer token — a long system prompt or first question — the single-turn rule applies to the last answer
(:func:`truncate_pair`).
"""
from __future__ import annotations

import logging
from typing import Any

from engine.contract.data.presets import Preset, render_prompt

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
FALLBACK_PROMPT = "### Instruction:\n{content}\n\n### Response:\n"


def prompt_messages(record: dict, preset: str | Preset) -> list[dict[str, str]]:
    """The conversation that asks for ``record``'s response: a chat record's turns before its last answer, else
    one user message from the preset's template."""
    if record.get("messages"):
        return [dict(turn) for turn in record["messages"][:-1]]
    return [{"role": "user", "content": render_prompt(record, preset)}]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _prompt_text(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return fallback_conversation(tokenizer, messages)


def fallback_conversation(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The plain layout for tokenizers without a chat template: a system prompt first, each user turn as an
    instruction block, earlier answers each followed by the eos token; ends where the next answer starts."""
    eos = tokenizer.eos_token or ""
    parts = []
    for turn in messages:
        if turn["role"] == "system":
            parts.append(turn["content"] + "\n\n")
        elif turn["role"] == "user":
            parts.append(FALLBACK_PROMPT.format(content=turn["content"]))
        else:
            parts.append(turn["content"] + eos + "\n\n")
    return "".join(parts)


def prompt_texts(tokenizer: Any, records: list[dict], preset: str | Preset) -> list[str]:
    """Prompt strings ready for generation (chat template with the generation prompt, or the fallback)."""
    return [_prompt_text(tokenizer, prompt_messages(r, preset)) for r in records]


def completion_text(tokenizer: Any, messages: list[dict[str, str]], prompt: str, response: str) -> str:
    """What follows the prompt in a full conversation: the response and the end-of-turn marker."""
    eos = tokenizer.eos_token or ""
    if not has_chat_template(tokenizer):
        return response + eos
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(prompt) or response not in full[len(prompt):]:
        return response + eos  # a template that rewrites earlier turns (e.g. drops reasoning): plain ending
    tail = full[len(prompt):]
    end = tail.index(response) + len(response)
    closing = tail[end:].rstrip()  # "<|im_end|>" without the newline that only separates turns
    return tail[:end] + (closing or eos)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt string, with a bos id in front for tokenizers that want one and whose template did
    not write it (the fallback layout on llama-style tokenizers). Training and generation both use this."""
    bos = getattr(tokenizer, "bos_token", None)
    head = [tokenizer.bos_token_id] if bos and getattr(tokenizer, "add_bos_token", False) \
        and not prompt.startswith(bos) else []
    return head + _encode(tokenizer, prompt)


def truncate_pair(prompt_ids: list[int], target_ids: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Fit prompt + target into ``max_length`` as the module docstring describes."""
    if len(prompt_ids) + len(target_ids) <= max_length:
        return prompt_ids, target_ids
    keep = min(len(target_ids), max(1, max_length // 4))
    if max_length - len(prompt_ids) >= keep:
        return prompt_ids, target_ids[:max_length - len(prompt_ids)]
    return prompt_ids[len(prompt_ids) - (max_length - keep):], target_ids[:keep]


def encode_example(tokenizer: Any, record: dict, preset: str | Preset, max_length: int) -> dict[str, list[int]]:
    """input_ids, attention_mask and labels (−100 on prompt tokens) of one record; a chat record has labels on
    every assistant turn (:func:`encode_conversation`)."""
    if record.get("messages"):
        return encode_conversation(tokenizer, record, max_length)
    messages = prompt_messages(record, preset)
    prompt = _prompt_text(tokenizer, messages)
    prompt_ids = encode_prompt(tokenizer, prompt)
    target_ids = _encode(tokenizer, completion_text(tokenizer, messages, prompt, record["response"]))
    prompt_ids, target_ids = truncate_pair(prompt_ids, target_ids, max_length)
    input_ids = prompt_ids + target_ids
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids),
            "labels": [IGNORE_INDEX] * len(prompt_ids) + target_ids}


def tokenize_for_sft(tokenizer: Any, records: list[dict], max_length: int, preset: str | Preset) -> Any:
    """A ``datasets.Dataset`` of input_ids / attention_mask / labels (loss on response tokens only)."""
    from datasets import Dataset

    rows = [encode_example(tokenizer, r, preset, max_length) for r in records]
    full = sum(1 for row in rows if len(row["input_ids"]) >= max_length)
    if full:
        log.info("%d of %d examples reach the %d-token limit (longer ones were truncated)", full, len(rows),
                 max_length)
    columns = {key: [row[key] for row in rows] for key in ("input_ids", "attention_mask", "labels")}
    return Dataset.from_dict(columns)


# ------------------------------------------------------------------ multi-turn chat records ---------------------

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
