"""Rows of a local data file with their locations, for the loader and the preview alike.

``iter_rows(path)`` yields ``(where, row)`` where ``where`` is ``FILE:LINE`` (JSONL, JSON, CSV) or
``FILE:row N`` (Parquet) and ``row`` is a dict, or a :class:`RecordProblem` for a row that cannot be read (a
broken JSON line): callers decide whether to stop (the loader) or to collect it (the preview). Stdlib only;
Parquet needs pyarrow (installed with ``datasets``), imported when a Parquet file is read.
"""
from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.contract.data.records import RecordProblem
from engine.contract.errors import FileProblem  # re-exported
from engine.contract.safe_json import MAX_JSON_DEPTH, JSONProblem, safe_json_loads, too_deep

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
           ".parquet": "parquet", ".pq": "parquet"}
Row = tuple[str, "dict[str, Any] | RecordProblem"]



def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise FileProblem(f"{path}: unknown file type {path.suffix or '(none)'!r}; use a .jsonl, .json, .csv or "
                          f".parquet file.")
    if fmt == "json" and _first_line(path).startswith("{"):
        _refuse_one_object(path)
        return "jsonl"  # JSON lines saved with a .json name
    return fmt


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8-sig") as f:
            for line in f:
                if line.strip():
                    return line.strip()
    except UnicodeDecodeError as exc:
        raise FileProblem(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8.") from None
    return ""


def _refuse_one_object(path: Path) -> None:
    """A .json file that is one object spread over several lines (``{"data": [...]}``) is neither a list nor
    JSON lines: say so, and where its rows probably are, instead of "line 1 is not valid JSON"."""
    try:
        safe_json_loads(_first_line(path))
        return  # the first line is a whole object: JSON lines
    except JSONProblem:
        pass
    try:
        whole = safe_json_loads(path.read_text(encoding="utf-8-sig"))
    except JSONProblem:
        return  # broken JSON lines: the reader names the line
    if isinstance(whole, dict):
        lists = [key for key, value in whole.items() if isinstance(value, list)]
        hint = f" (its rows may be the list under {lists[0]!r}; save that list as the file)" if lists else ""
        raise FileProblem(f"{path}: holds one JSON object, not rows{hint}; a .json data file must hold a list of "
                          f"objects ([{{...}}, ...]) or one object per line.")


def iter_rows(path: str | Path) -> Iterator[Row]:
    """``(where, row | RecordProblem)`` for each row of a JSONL, JSON (list of objects), CSV/TSV or Parquet file."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise FileProblem(f"{path}: is a folder; data.path needs one JSONL, JSON, CSV or Parquet file in it.")
    if not path.is_file():  # a FIFO or device would block or never end: only regular files are data
        raise FileProblem(f"{path}: {'not a regular file' if path.exists() else 'no such file'}; check data.path.")
    try:
        fmt = file_format(path)  # may read the first line: inside the try, so a binary file gets the sentence too
        if fmt == "jsonl":
            yield from _jsonl(path)
        elif fmt == "json":
            yield from _json_list(path)
        elif fmt in ("csv", "tsv"):
            yield from _csv(path, "\t" if fmt == "tsv" else ",")
        else:
            yield from _parquet(path)
    except UnicodeDecodeError as exc:
        raise FileProblem(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8.") from None


def _jsonl(path: Path) -> Iterator[Row]:
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:  # 5,000-digit numbers, 50,000-deep nesting, NaN: each one line's problem, never the reader's
                yield where, safe_json_loads(line)
            except JSONProblem as exc:
                yield where, RecordProblem(f"{exc.bare}; fix the line or remove it.")


def _json_list(path: Path) -> Iterator[Row]:
    """Walk a top-level JSON list element by element so each object keeps the line it starts on."""
    text = path.read_text(encoding="utf-8-sig")
    decoder = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)  # no NaN/inf in data
    pos = _skip_space(text, 0)
    if pos >= len(text) or text[pos] != "[":
        raise FileProblem(f"{path}: a .json data file must hold a list of objects ([{{...}}, ...]) or one object "
                          f"per line.")
    pos = _skip_space(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        return
    while pos < len(text):
        line = text.count("\n", 0, pos) + 1
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield f"{path}:{exc.lineno}", RecordProblem(f"not valid JSON ({exc.msg}); fix the file from here on.")
            return
        except RecursionError:
            yield f"{path}:{line}", RecordProblem("nested too deeply to be a record; fix the file from here on.")
            return
        except ValueError as exc:  # not a JSONDecodeError: an integer of more than 4,300 digits
            yield f"{path}:{line}", RecordProblem(f"cannot be read ({exc}); fix the file from here on.")
            return
        if too_deep(value, MAX_JSON_DEPTH):
            yield f"{path}:{line}", RecordProblem("nested too deeply to be a record; fix the file from here on.")
            return
        yield f"{path}:{line}", value
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_space(text, pos + 1)
        elif pos < len(text) and text[pos] == "]":
            return
        else:
            line = text.count("\n", 0, pos) + 1
            yield f"{path}:{line}", RecordProblem("expected ',' or ']' after an object; fix the list from here on.")
            return


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is too large")
    return value


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _csv(path: Path, delimiter: str) -> Iterator[Row]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # code cells (BugNet, PyTorrent) exceed the 128 KiB default
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:  # dict(zip(...)) would keep the last such cell and silently drop the others
            raise FileProblem(f"{path}:1: the header names column {repeated[0]!r} more than once; give each column "
                              "its own name.")
        start = reader.line_num + 1
        try:
            for cells in reader:
                where, start = f"{path}:{start}", reader.line_num + 1
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) != len(header):
                    count = "1 cell" if len(cells) == 1 else f"{len(cells)} cells"
                    yield where, RecordProblem(f"has {count} but the header has {len(header)}; check "
                                               f"quoting (cells with commas or newlines need double quotes).")
                    continue
                yield where, dict(zip(header, cells))
        except csv.Error as exc:
            yield f"{path}:{reader.line_num}", RecordProblem(f"cannot be parsed as CSV ({exc}); check quoting.")


def _parquet(path: Path) -> Iterator[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise FileProblem(f"{path}: reading Parquet needs pyarrow; install it (pip install pyarrow) or convert "
                          f"the file to JSONL.") from None
    try:
        table = pq.ParquetFile(str(path))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises its own ArrowInvalid / OSError types
        raise FileProblem(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0][:120]}).") from None
    number = 0
    for batch in table.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield f"{path}:row {number}", row
