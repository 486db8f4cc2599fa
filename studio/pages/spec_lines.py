"""Which line of a YAML spec a spec error is about: the spec's sentences name a field ("train.learning_rate: must
be > 0, got -1."), not a line; the review page's editor shows the line, found here from YAML's own node marks."""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass
class _Key:
    path: tuple[str, ...]  # keys, list indices and stage names above it, then its own name
    line: int  # 1-based
    value: str  # the scalar value's text ('' for a mapping or list)


def _keys(text: str) -> list[_Key]:
    import yaml  # the contract's one dependency, lazily as in engine.contract.spec

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return []
    found: list[_Key] = []

    def walk(node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            names = [v.value for k, v in node.value if k.value == "name" and isinstance(v, yaml.ScalarNode)]
            here = path + tuple(names[:1])  # a stage is known by its name as much as by its index
            for key, value in node.value:
                scalar = value.value if isinstance(value, yaml.ScalarNode) else ""
                found.append(_Key(here + (str(key.value),), key.start_mark.line + 1, str(scalar)))
                walk(value, here + (str(key.value),))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, path + (str(index),))

    if root is not None:
        walk(root, ())
    return found


def _same_value(reported: str, written: str) -> bool:
    """'-2.0' in a message is the '-2' written in the file."""
    if reported == written:
        return True
    try:
        return float(reported) == float(written)
    except ValueError:
        return False


def line_of_error(text: str, message: str) -> int | None:
    """The 1-based line of ``text`` that ``message`` (a SpecError's sentence) is most likely about."""
    where, _, rest = message.partition(": ")
    parts = [p for p in re.split(r"[.\[\]]+", where) if p and p != "spec"]
    unknown = re.search(r"unknown setting '([^']+)'", rest)
    target = unknown.group(1) if unknown else (parts[-1] if parts else "")
    got = re.search(r"got (.+?)\.?$", rest)
    best, best_score = None, -1
    for key in _keys(text):
        if key.path[-1] != target:
            continue
        score = sum(part in key.path for part in parts) * 2
        if got and key.value and _same_value(got.group(1).strip("'\""), key.value):
            score += 3
        if score > best_score:
            best, best_score = key, score
    return best.line if best else None
