"""The chain-of-thought template, in one place: the prompt GRPO asks in (``GRPOSpec.template``'s default), the
completion a cold-start SFT stage teaches (``SFTStage.format: cot_template``), and — by construction — what the
format and correctness rewards parse (``engine/rewards/functions.py``: ``<think>…</think> <answer>…</answer>``).
A test renders a record here and scores it with the rewards, so the three cannot drift apart. Stdlib only.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.contract.data.presets import Preset, render_prompt

COT_TEMPLATE = ("Think step by step inside <think></think>, then give only the final answer inside "
                "<answer></answer>.\n\n{prompt}")


def task_prompt(record: Mapping[str, Any], template: str, preset: str | Preset) -> str:
    """The user message GRPO (and a cold start for it) asks: ``template`` around the preset's rendering of the
    record."""
    return template.replace("{prompt}", render_prompt(record, preset))


def cot_final(record: Mapping[str, Any]) -> str:
    """What goes inside <answer>: the reference answer, else the program (fenced, as code_tests extracts it)
    for a record with tests, else the response."""
    if record.get("answer") not in (None, ""):
        return str(record["answer"]).strip()
    response = str(record.get("response") or "").strip()
    return f"```python\n{response}\n```" if record.get("tests") else response


def cot_completion(reasoning: str, final: str) -> str:
    """The completion in the template: the reasoning in <think>, the final answer in <answer>."""
    return f"<think>\n{reasoning.strip()}\n</think>\n<answer>\n{final}\n</answer>"


def cot_record(record: Mapping[str, Any], template: str, preset: str | Preset) -> dict | None:
    """``record`` as a one-turn chat in the template (the GRPO prompt as the user turn, reasoning and answer as
    the assistant's), or None when it has no reasoning trace to teach."""
    reasoning = str(record.get("reasoning") or "").strip()
    if not reasoning or record.get("messages"):
        return None
    completion = cot_completion(reasoning, cot_final(record))
    return {**record, "response": completion,
            "messages": [{"role": "user", "content": task_prompt(record, template, preset)},
                         {"role": "assistant", "content": completion}]}
