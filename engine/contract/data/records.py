"""The canonical record and its validation: one piece of code shared by the loader and the GUI's preview.

Every data source (the demo kit, a hub preset, a local JSONL/JSON/CSV/Parquet file) is turned into records of one
shape::

    {"id": str, "instruction": str, "context": str, "response": str, "category": str, "language": str,
     "answer": str | None, "tests": list[{"input": str, "output": str}] | None, "reasoning": str | None,
     "messages": list[{"role": str, "content": str}] | None}

Rows come in several layouts (``data.format``): columns mapped to the canonical names, Alpaca (instruction,
input, output) and the chat formats of :mod:`engine.contract.data.chat` (ShareGPT, OpenAI messages), whose records also
carry ``messages`` — the conversation up to its last assistant turn.

``canonical_record`` builds one from a raw row and a column mapping (canonical name → column, or a tuple of
columns tried in order) and raises :class:`RecordProblem` with a sentence saying what is wrong and what to do;
callers prefix it with ``FILE:LINE``. Stdlib only: the studio imports this module through the preview.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.contract.data.chat import (ALPACA_COLUMNS, CHAT_COLUMNS, ChatProblem, chat_fields, detect_format,
                                         normalise_turns)
from engine.contract.errors import RecordProblem, echo  # RecordProblem re-exported
from engine.contract.safe_json import JSONProblem, safe_json_loads, unencodable

CANONICAL_FIELDS = ("id", "instruction", "context", "response", "category", "language", "answer", "tests",
                    "reasoning", "messages")
REQUIRED_FIELDS = ("instruction", "response")
# The fields a user maps a file's columns to (the wizard's mapping table, the spec's data.columns).
MAPPABLE_FIELDS = ("instruction", "response", "context", "category", "answer", "tests")

ColumnRef = str | tuple[str, ...]



def identity_mapping() -> dict[str, ColumnRef]:
    """Each canonical field read from the column of the same name (the local preset's default)."""
    return {name: name for name in CANONICAL_FIELDS}


def merge_mapping(base: Mapping[str, ColumnRef], overrides: Mapping[str, Any] | None) -> dict[str, ColumnRef]:
    """``base`` with the user's ``data.columns`` on top; unknown canonical names are refused."""
    merged = dict(base)
    for name, column in (overrides or {}).items():
        if name not in CANONICAL_FIELDS:
            raise RecordProblem(f"data.columns: {echo(name)} is not a canonical field; use one of "
                                f"{', '.join(CANONICAL_FIELDS)} as keys (values are your file's column names).")
        if isinstance(column, list):
            column = tuple(column)
        if not (isinstance(column, str) and column) and not (isinstance(column, tuple) and column):
            raise RecordProblem(f"data.columns.{name}: give the name of a column in your file, got {echo(column)}.")
        merged[name] = column
    return merged


def _candidates(ref: ColumnRef) -> tuple[str, ...]:
    return (ref,) if isinstance(ref, str) else tuple(ref)


def pick(row: Mapping[str, Any], ref: ColumnRef | None) -> tuple[bool, Any]:
    """(found, value) of the first candidate column present in ``row`` with a non-empty value (else the first
    present one, possibly empty)."""
    if ref is None:
        return False, None
    present = [c for c in _candidates(ref) if c in row]
    for column in present:
        value = row[column]
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return True, value
    return (True, row[present[0]]) if present else (False, None)


def _type_name(value: Any) -> str:
    return {list: "a list", dict: "an object", bool: "true/false", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__)


def _text(name: str, value: Any, *, numbers_ok: bool = False) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return encodable(name, value)
    if numbers_ok and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise RecordProblem(f"{name} must be text, got {_type_name(value)} ({echo(value, 40)}); store it as a "
                        f"string or map another column to {name} in data.columns.")


def encodable(name: str, text: str) -> str:
    """``text`` if UTF-8 can encode it; RecordProblem naming the field otherwise. A lone surrogate ("\\ud800" in
    a JSON file) is valid JSON and a valid Python string, but no tokenizer or file takes it: refused here, at
    the data check, instead of as a tokenizer TypeError in the middle of training."""
    at = unencodable(text)
    if at is not None:
        raise RecordProblem(f"{name} holds a character that is not text ({text[at]!a} at character {at + 1}, a "
                            "lone surrogate from a \\u escape); fix the text or remove this row.")
    return text


def parse_tests(value: Any) -> list[dict] | None:
    """``tests`` as a list of {"input", "output"} strings; a JSON string (e.g. from a CSV cell) is decoded."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:  # a cell of any text: 5,000-digit numbers and 50,000-deep nesting are this row's problem
            value = safe_json_loads(value)
        except JSONProblem as exc:
            raise RecordProblem(f"tests {exc}; write it as a list like "
                                '[{"input": "1 2", "output": "3"}].') from None
    if not isinstance(value, list):
        raise RecordProblem(f"tests must be a list of {{input, output}} pairs, got {_type_name(value)}.")
    tests = []
    for i, case in enumerate(value):
        if not isinstance(case, Mapping) or "input" not in case or "output" not in case:
            raise RecordProblem(f"tests[{i}] must be an object with input and output, got {echo(case)}.")
        tests.append({"input": _text(f"tests[{i}].input", case["input"], numbers_ok=True) or "",
                      "output": _text(f"tests[{i}].output", case["output"], numbers_ok=True) or ""})
    return tests or None


def _required(row: Mapping[str, Any], mapping: Mapping[str, ColumnRef], name: str) -> str:
    found, value = pick(row, mapping.get(name))
    if not found:
        columns = ", ".join(list(row)[:12]) or "none"
        wanted = " or ".join(_candidates(mapping.get(name, name)))
        raise RecordProblem(f"no column {wanted} for {name} (columns here: {columns}); map one to {name} "
                            f"(in a spec data.columns, e.g. {{{name}: <your column>}}; in the wizard its column "
                            "mapping).")
    text = _text(name, value)
    if text is None or not text.strip():
        raise RecordProblem(f"{name} is empty; fill it in or remove this row.")
    return text


def _chat_format(row: Mapping[str, Any], mapping: Mapping[str, ColumnRef], fmt: str) -> str:
    """The row's layout; a conversation column mapped under another name is told apart by its turns' keys."""
    fmt = detect_format(row.keys(), fmt)
    found, turns = pick(row, mapping.get("messages"))
    if fmt in ("auto", "columns") and found and isinstance(turns, list) and turns \
            and mapping.get("messages") != "messages":
        return "sharegpt" if isinstance(turns[0], Mapping) and "from" in turns[0] else "messages"
    return fmt


def _chat_fields(row: Mapping[str, Any], mapping: Mapping[str, ColumnRef], fmt: str,
                 roles: Mapping[str, str] | None) -> dict[str, Any]:
    candidates = tuple(dict.fromkeys((*_candidates(mapping.get("messages", "messages")), CHAT_COLUMNS[fmt])))
    found, turns = pick(row, candidates)
    if not found:
        raise RecordProblem(f"no column {' or '.join(candidates)} with the conversation (columns here: "
                            f"{', '.join(list(row)[:12]) or 'none'}); map one to messages (in a spec "
                            "data.columns, e.g. "
                            "{messages: <your column>}; in the wizard its column mapping).")
    try:
        return chat_fields(normalise_turns(turns, fmt, roles))
    except ChatProblem as exc:
        raise RecordProblem(str(exc)) from None


def canonical_record(row: Mapping[str, Any], mapping: Mapping[str, ColumnRef], *, default_id: str,
                     default_language: str = "en", default_category: str = "general", fmt: str = "auto",
                     roles: Mapping[str, str] | None = None) -> dict:
    """One validated canonical record from a raw row (see the module docstring); RecordProblem if malformed.
    ``fmt`` is ``data.format`` (auto: detected from the row's columns), ``roles`` is ``data.roles``."""
    if not isinstance(row, Mapping):
        raise RecordProblem(f"expected an object with named fields, got {_type_name(row)}.")
    fmt = _chat_format(row, mapping, fmt)
    if fmt in CHAT_COLUMNS:
        record: dict[str, Any] = _chat_fields(row, mapping, fmt, roles)
    else:
        if fmt == "alpaca":  # Alpaca's columns where the mapping's own are absent from the row
            mapping = {**mapping, **{k: v for k, v in ALPACA_COLUMNS.items() if not pick(row, mapping.get(k))[0]}}
        record = {name: _required(row, mapping, name) for name in REQUIRED_FIELDS}
        record["messages"] = None
    for name in ("context", "category", "reasoning", "answer"):
        _, value = pick(row, mapping.get(name))
        record[name] = _text(name, value, numbers_ok=name in ("answer", "category"))
    record["context"] = record["context"] or ""
    record["category"] = (record["category"] or "").strip() or default_category
    _, raw_id = pick(row, mapping.get("id"))
    record["id"] = _text("id", raw_id, numbers_ok=True) if raw_id not in (None, "") else default_id
    _, language = pick(row, mapping.get("language"))
    language = (_text("language", language) or "").strip().lower() or default_language
    if not language.replace("-", "").isalpha() or len(language) > 8:
        raise RecordProblem(f"language {echo(language)} is not a language code; use en or es.")
    record["language"] = language
    _, tests = pick(row, mapping.get("tests"))
    record["tests"] = parse_tests(tests)
    return {name: record[name] for name in CANONICAL_FIELDS}
