"""The chat service's requests checked before any work: every field's JSON type (:func:`check_fields`),
name-like fields, messages, sampling settings, and the size of a score. Each refusal is an EngineError whose text
becomes the ``error`` event (engine/chat/service.py)."""
from __future__ import annotations

import json
from typing import Any

from engine.contract.errors import echo, unencodable
from engine.core.context import EngineError


def check_messages(messages: Any) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise EngineError("generate needs 'messages': a non-empty list of {role, content} objects.")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or \
                m.get("role") not in ("system", "user", "assistant"):
            raise EngineError("each message must be an object with role system, user or assistant and a text "
                              "content.")
        at = unencodable(m["content"])
        if at is not None:  # "\\ud800" is valid JSON; the tokenizer would fail on it with a cryptic TypeError
            raise EngineError(f"messages[{i}].content holds a character that is not text ({m['content'][at]!a} at "
                              f"character {at + 1}, a lone surrogate from a \\u escape); send UTF-8 text.")
    return messages


SCORE_MAX_PAIRS = 4_000_000  # ROUGE-L's LCS table: a few seconds in pure Python
SAMPLING_KEYS = ("max_new_tokens", "greedy", "temperature", "top_p")

# Every field of every command and the JSON type it must have: a value of another type is refused with the
# field's name (bool("false") is True, int("5") hides a client bug, 5.5 tokens is not a count), and a field the
# command does not have is refused too (a misspelt one would be silently ignored). None: the field may be null.
TEXT, WHOLE, NUMBER, BOOL, LIST, OBJECT = "text", "a whole number", "a number", "true or false", "a list", "an object"
COMMAND_FIELDS: dict[str, dict[str, tuple]] = {
    "load": {"model": (TEXT,), "source": (TEXT,), "load_in_4bit": (BOOL,)},
    "generate": {"request_id": (TEXT,), "model": (TEXT,), "messages": (LIST,), "sampling": (OBJECT, None),
                 "draft": (TEXT, None)},
    "stop": {"request_id": (TEXT, None)},
    "unload": {"model": (TEXT,)},
    "score": {"id": (TEXT,), "prediction": (TEXT,), "reference": (TEXT,)},
    "quit": {},
}
SAMPLING_FIELDS: dict[str, tuple] = {"max_new_tokens": (WHOLE,), "greedy": (BOOL,), "temperature": (NUMBER,),
                                     "top_p": (NUMBER,), "seed": (WHOLE, None)}


def _is(value: Any, kind: str | None) -> bool:
    if kind is None:
        return value is None
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == WHOLE:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == TEXT:  # a lone surrogate ("\\ud800" in the JSON) is not text any tokenizer or path takes
        return isinstance(value, str) and unencodable(value) is None
    return isinstance(value, {LIST: list, OBJECT: dict}[kind])


def _shown(value: Any) -> str:
    """A refused value as the client sent it, short; text is marked as such ("false" is not false)."""
    text = json.dumps(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{text} (text)" if isinstance(value, str) else text


def check_fields(command: dict, fields: dict[str, tuple] | None = None, where: str = "") -> None:
    """Each field of a command (or of its ``sampling`` object) has its declared JSON type; no unknown field."""
    kind = command.get("type", "")
    fields = COMMAND_FIELDS.get(kind, {}) if fields is None else fields
    where = where or str(kind)
    for key, value in command.items():
        if key == "type" and not where.endswith("sampling"):
            continue
        allowed = fields.get(key)
        if allowed is None:
            known = ", ".join(fields) or "none"
            raise EngineError(f"{where} has no field {json.dumps(key)[:40]}; its fields are {known}.")
        if not any(_is(value, k) for k in allowed):
            words = " or ".join("null" if k is None else k for k in allowed)
            raise EngineError(f"{where}.{key} must be {words}, got {_shown(value)}.")


def text_field(command: dict, key: str, kind: str) -> str:
    """A command's name-like field (model, request_id) as non-empty text, or the sentence saying it is not."""
    value = command.get(key)
    if not isinstance(value, str) or not value or unencodable(value) is not None:
        raise EngineError(f"{kind} needs {key!r}: a non-empty string of text, got {echo(value)}.")
    return value


def sampling_kwargs(sampling: Any) -> dict:
    """generate() keyword arguments from the request's sampling block (validated like GenerationSpec)."""
    from engine.contract.spec import GenerationSpec, SpecError

    if not isinstance(sampling, (dict, type(None))):
        raise EngineError("'sampling' must be an object such as {\"greedy\": true, \"max_new_tokens\": 128}.")
    sampling = dict(sampling or {})
    unknown = sorted(set(sampling) - set(SAMPLING_FIELDS))
    if unknown:  # a misspelt setting must not be silently ignored (the answer would not be what was asked)
        raise EngineError(f"unknown sampling setting {unknown[0]!r}; use {', '.join(SAMPLING_KEYS)} or seed.")
    check_fields(sampling, SAMPLING_FIELDS, "generate.sampling")  # "greedy": "false" is text, not false
    seed = sampling.pop("seed", None)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise EngineError(f"sampling.seed must be a whole number from 0 to 2**63-1, got {json.dumps(seed)[:40]}.")
    try:
        gen = GenerationSpec(**sampling)
    except (SpecError, TypeError) as exc:
        raise EngineError(f"bad sampling settings: {exc}") from None
    kwargs: dict[str, Any] = {"max_new_tokens": int(gen.max_new_tokens), "do_sample": not gen.greedy}
    if not gen.greedy:
        kwargs.update(temperature=float(gen.temperature), top_p=float(gen.top_p))
    return {"kwargs": kwargs, "seed": seed}


def draft_field(command: dict, model: str, loaded: Any) -> str | None:
    """The generate command's draft model (another loaded model that drafts for ``model``: speculative decoding),
    or None; ``loaded`` holds the names of the models loaded or loading."""
    draft = command.get("draft")
    if draft is None:
        return None
    draft = text_field(command, "draft", "generate")
    if draft == model:
        raise EngineError(f"generate.draft names {model!r}, the model that answers; a draft must be another "
                          "loaded model (e.g. the student drafting for its teacher).")
    if draft not in loaded:
        raise EngineError(f"generate.draft: model {echo(draft)} is not loaded; load it first (loaded: "
                          f"{', '.join(loaded) or 'none'}).")
    return draft


def score_texts(command: dict) -> tuple[str, str]:
    """The prediction and reference of a score command, both text and short enough to compare."""
    prediction, reference = command.get("prediction"), command.get("reference")
    if not isinstance(prediction, str) or not isinstance(reference, str):
        raise EngineError("score needs text in both prediction and reference.")
    pairs = len(prediction.split()) * len(reference.split())
    if pairs > SCORE_MAX_PAIRS:  # the LCS is quadratic: two 200,000-word texts would take hours
        raise EngineError(f"score: prediction and reference are too long to compare ({pairs:,} word pairs, at "
                          f"most {SCORE_MAX_PAIRS:,}); score shorter texts.")
    return prediction, reference


def load_fields(command: dict) -> tuple[str, str, bool]:
    """The model name, source and 4-bit choice of a load command."""
    name, source = command.get("model"), command.get("source")
    if not isinstance(name, str) or not name or not isinstance(source, str) or not source:
        raise EngineError("load needs 'model' (a name) and 'source' (a folder, hub id, .gguf file or "
                          "demo:student).")
    load_in_4bit = command.get("load_in_4bit", False)
    if not isinstance(load_in_4bit, bool):  # bool("no") is True: a string here would load 4-bit by surprise
        raise EngineError(f"load_in_4bit must be true or false, got {json.dumps(load_in_4bit)[:40]}.")
    return name, source, load_in_4bit


def parse_preload(values: list[str]) -> list[tuple[str, str]]:
    pairs = [tuple(v.partition("=")[::2]) for v in values]
    for (name, source), value in zip(pairs, values):
        if not name or not source:
            raise ValueError(f"--model expects NAME=SOURCE (e.g. student=demo:student), got {value!r}.")
    names = [name for name, _ in pairs]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"--model {name}=… is given twice; give each model its own name.")
    return pairs
