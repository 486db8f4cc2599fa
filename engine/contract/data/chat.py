"""Chat-format records: ShareGPT (``conversations: [{from, value}]``), OpenAI ``messages: [{role, content}]`` and
Alpaca (``instruction, input, output``), detected per row or named in ``data.format``.

A chat row becomes a canonical record whose ``messages`` hold the conversation up to its last assistant turn
(system prompt and earlier turns included; turns after it teach nothing and are dropped), with ``instruction``
= the last user turn and ``response`` = the last assistant turn, so evaluation, distillation and GRPO, which
prompt with everything before the last answer, work on chat data unchanged. Training puts the loss on every
assistant turn (``engine.training_data.formatting``). Stdlib only: the studio's preview uses it.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.contract.errors import echo, shorten, unencodable

FORMATS = ("auto", "columns", "alpaca", "sharegpt", "messages")
ALPACA_COLUMNS = {"instruction": "instruction", "context": "input", "response": "output"}
CHAT_COLUMNS = {"sharegpt": "conversations", "messages": "messages"}
# role names seen in ShareGPT/OpenAI-style data → the chat template's roles
KNOWN_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "human": "user", "gpt": "assistant",
               "bot": "assistant", "model": "assistant", "chatgpt": "assistant", "prompter": "user"}
ROLES = ("system", "user", "assistant")


class ChatProblem(ValueError):
    """A chat row cannot become a record; the message says what and what to do (no location)."""


def detect_format(keys: Any, declared: str = "auto") -> str:
    """The row layout: ``declared`` unless auto, else from the column names (a row's keys or a table's)."""
    if declared != "auto":
        return declared
    keys = set(keys)
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if {"instruction", "output"} <= keys and "response" not in keys:
        return "alpaca"
    return "columns"


def _content(value: Any, where: str) -> str:
    """A turn's text; OpenAI content parts ([{type: text, text}]) are joined."""
    if isinstance(value, list) and all(isinstance(p, Mapping) for p in value):
        value = "".join(str(p.get("text", "")) for p in value if p.get("type", "text") == "text")
    if isinstance(value, str):
        at = unencodable(value)
        if at is not None:  # a lone surrogate ("\\ud800"): valid JSON, but no tokenizer takes it
            raise ChatProblem(f"{where} content holds a character that is not text ({value[at]!a} at character "
                              f"{at + 1}, a lone surrogate from a \\u escape); fix the text or remove this row.")
        return value
    raise ChatProblem(f"{where} content must be text, got {type(value).__name__}; store each turn's text as a "
                      "string.")


def normalise_turns(turns: Any, fmt: str, roles: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """[{role, content}] with roles mapped to system/user/assistant; ChatProblem says which turn is wrong."""
    column = CHAT_COLUMNS[fmt]
    if not isinstance(turns, list) or not turns:
        raise ChatProblem(f"{column} must be a non-empty list of turns, got {echo(turns, 40)}.")
    role_key, text_key = ("from", "value") if fmt == "sharegpt" else ("role", "content")
    mapping = {**KNOWN_ROLES, **{str(k).lower(): v for k, v in (roles or {}).items()}}
    out = []
    for i, turn in enumerate(turns):
        where = f"{column}[{i}]"
        if not isinstance(turn, Mapping) or role_key not in turn or text_key not in turn:
            raise ChatProblem(f"{where} must be an object with {role_key} and {text_key}, got {echo(turn)}.")
        raw = str(turn[role_key]).encode("utf-8", "backslashreplace").decode("utf-8")  # only compared, echoed
        role = mapping.get(raw.lower())
        if role not in ROLES:
            raise ChatProblem(f"{where} has role {echo(raw)}; map it to user, assistant or system in data.roles, e.g. "
                              f"{{{shorten(raw, 40)}: user}}.")
        out.append({"role": role, "content": _content(turn[text_key], where)})
    return out


def chat_fields(turns: list[dict[str, str]]) -> dict[str, Any]:
    """messages (up to the last assistant turn), instruction (last user turn) and response (last answer)."""
    last = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=None)
    if last is None:
        seen = ", ".join(dict.fromkeys(t["role"] for t in turns))
        raise ChatProblem(f"has no assistant turn (roles here: {seen}); a chat record needs at least one assistant "
                          "message to learn from — add one, remove the row, or map your answer role in data.roles.")
    messages = turns[:last + 1]
    if not messages[-1]["content"].strip():
        raise ChatProblem("its last assistant turn is empty; fill it in or remove this row.")
    users = [t["content"] for t in messages[:-1] if t["role"] == "user"]
    if not users:
        raise ChatProblem("has no user turn before the assistant's answer; a chat record needs a question.")
    return {"messages": messages, "instruction": users[-1], "response": messages[-1]["content"]}
