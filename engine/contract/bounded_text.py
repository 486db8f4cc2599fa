"""Reading untrusted settings text without letting it exhaust memory, the stack or the CPU: a size limit, UTF-8
with a sentence, no FIFO or device that would block, YAML aliases counted by what they expand to, nesting
limited, duplicate keys refused. Stdlib + PyYAML (imported lazily): part of the contract the studio imports."""
from __future__ import annotations

import collections
import json
import os
import stat
from pathlib import Path
from typing import Any

from engine.contract.errors import SpecError
from engine.contract.safe_json import shorten, unencodable

MAX_SPEC_BYTES = 1 << 20  # a spec is a page of settings; anything near a megabyte is not one
MAX_YAML_NODES = 20_000  # values after alias expansion (a real spec has a few hundred)
MAX_YAML_DEPTH = 40  # nesting levels (a real spec has five)


def read_spec_file(path: Path) -> str:
    """The text of a spec file; SpecError (a sentence naming the file) for a folder, a FIFO or device, a file
    over the size limit, or bytes that are not UTF-8."""
    try:
        # O_NONBLOCK: a FIFO or device named like a spec must not hang the engine before it can say so
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec file ({exc.strerror}).") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "is a folder, not a spec file" if stat.S_ISDIR(mode) else "is not a regular file"
        raise SpecError(f"{path}: {what}; give the path of a .yaml or .json spec.")
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read(MAX_SPEC_BYTES + 1)
        except OSError as exc:
            raise SpecError(f"{path}: cannot read the spec file ({exc.strerror}).") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: is larger than {MAX_SPEC_BYTES // 1024} KiB, too large for a spec; give the "
                        "spec file, not a data or model file.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: is not UTF-8 text (byte {exc.start}); save the spec as UTF-8 (or give the spec "
                        "file, not a binary file).") from None


def parse_bounded(text: str, *, json_format: bool = False) -> Any:
    """The data in YAML or JSON ``text``, within the size, expansion and nesting limits (SpecError otherwise)."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"the spec is larger than {MAX_SPEC_BYTES // 1024} KiB, too large for a spec.")
    try:
        values = _parse_json(text) if json_format else _parse_yaml(text)
    except RecursionError:
        raise SpecError(f"the spec is nested too deeply (more than {MAX_YAML_DEPTH} levels).") from None
    except SpecError:
        raise
    except (ValueError, OverflowError) as exc:  # an integer of more than 4,300 digits (Python's own limit)
        raise SpecError(f"a number in the spec cannot be read ({str(exc).split(';')[0]}); no setting needs one "
                        "that long.") from None
    _check_depth(values, MAX_YAML_DEPTH)
    _check_text(values)
    return values


def _parse_json(text: str) -> Any:
    try:  # NaN/Infinity reach the field check, which names the field
        return json.loads(text, parse_constant=lambda name: float(name), object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise SpecError(f"line {exc.lineno}: invalid JSON ({exc.msg}).") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object, refusing a key given twice as the YAML loader does (json keeps the last one silently)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise SpecError(f"the setting {shorten(key, 60)!r} is given twice in one object; keep one.")
        seen[key] = value
    return seen


def _parse_yaml(text: str) -> Any:
    import yaml  # lazy: keeps this module stdlib-only at import time

    try:
        loader = _bounded_loader()(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        raise SpecError(f"{line}invalid YAML ({getattr(exc, 'problem', exc)}).") from None


def _check_depth(value: Any, limit: int) -> None:
    """Refuse structures nested deeper than ``limit`` (iterative: deep input must not exhaust the stack)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise SpecError(f"the spec is nested too deeply (more than {limit} levels).")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)


def _check_text(value: Any) -> None:
    """Refuse a string (a value or a key) that UTF-8 cannot encode: a lone surrogate from a ``\\ud800`` escape
    is valid JSON and YAML, but a run name, path or setting holding one breaks every file and index it reaches."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, where or "the spec"))
                stack.append((child, f"{where}.{key}" if where else str(key)))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
        elif isinstance(item, str) and (at := unencodable(item)) is not None:
            raise SpecError(f"{shorten(where, 80) or 'the spec'}: holds a character that is not text "
                            f"({item[at]!a}, a lone surrogate from a \\u escape); write the text itself.")


_LOADER: Any = None


def _bounded_loader() -> type:
    """A SafeLoader that counts every value an alias expands to and the nesting depth, refusing a "billion
    laughs" bomb or a thousand-level nest while composing, before any of it is built in memory."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._nodes = 0
            self._depth = 0
            self._weights: dict[int, int] = {}

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                target = self.anchors.get(self.peek_event().anchor)
                self._nodes += self._weight(target) if target is not None else 1
            else:
                self._nodes += 1
            if self._nodes > MAX_YAML_NODES:
                raise SpecError(f"the spec expands to more than {MAX_YAML_NODES} values (YAML aliases?); a spec "
                                "is a page of settings, write it out plainly.")
            self._depth += 1
            if self._depth > MAX_YAML_DEPTH:
                raise SpecError(f"the spec is nested too deeply (more than {MAX_YAML_DEPTH} levels).")
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def _weight(self, node: Any) -> int:
            """Values under ``node``, counted as often as they repeat (what the alias expands to); counting stops
            past the limit, so a node that contains itself ends as "too many" instead of looping."""
            if id(node) in self._weights:
                return self._weights[id(node)]
            total, stack = 0, [node]
            while stack:
                item = stack.pop()
                total += 1
                if total > MAX_YAML_NODES:
                    break
                if isinstance(item.value, list):
                    for child in item.value:
                        stack.extend(child if isinstance(child, tuple) else (child,))
            self._weights[id(node)] = total
            return total

        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            counts = collections.Counter(k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode))
            duplicates = sorted(k for k, n in counts.items() if n > 1)
            if duplicates:
                raise SpecError(f"line {node.start_mark.line + 1}: the setting {shorten(duplicates[0], 60)!r} is "
                                "given twice; "
                                "keep one.")
            return super().construct_mapping(node, deep=deep)

    _LOADER = BoundedLoader
    return _LOADER
