"""Load a run's data as canonical records: the demo kit, a hub preset, or a local file with a column mapping.

Every row passes the same validation as the GUI's preview (:mod:`engine.contract.data.records`); the first malformed row
stops the load with an :class:`~engine.core.context.EngineError` whose message is ``FILE:LINE: what is wrong and what
to do``, so a bad file is reported before any model is loaded or trained. A hub preset that cannot reach the hub
fails with one sentence saying how to point it at a local copy (``data.path``), to which the preset's column
mapping is then applied.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine.contract.errors import echo
from engine.core.context import EngineError
from engine.contract.data.chat import ALPACA_COLUMNS, CHAT_COLUMNS, detect_format
from engine.contract.data.presets import Preset, preset_for
from engine.contract.data.readers import FileProblem, Row, iter_rows
from engine.contract.data.records import REQUIRED_FIELDS, RecordProblem, canonical_record, merge_mapping
from engine.contract.spec import DataSpec
from engine.contract.vocabulary import DEMO_PRESETS

log = logging.getLogger(__name__)


def load_records(spec: DataSpec) -> list[dict]:
    """Canonical records of ``spec`` (at most ``spec.max_samples``), validated, in source order."""
    try:
        preset = preset_for(spec)
        mapping = merge_mapping(preset.columns, spec.columns)
    except (ValueError, RecordProblem) as exc:
        raise EngineError(str(exc)) from None
    source, rows = _rows(spec, preset, mapping)
    records: list[dict] = []
    seen: dict[str, str] = {}
    for index, (where, row) in enumerate(rows):
        if isinstance(row, RecordProblem):
            raise EngineError(f"{where}: {row}")
        if not preset.accepts(row):
            continue
        try:
            record = canonical_record(row, mapping, default_id=f"{preset.name}-{index:06d}",
                                      default_language=preset.language, default_category=preset.category,
                                      fmt=spec.format, roles=spec.roles)
            if preset.finish is not None:
                record = preset.finish(record, row)
        except RecordProblem as exc:
            raise EngineError(f"{where}: {exc}") from None
        if record["id"] in seen:
            raise EngineError(f"{where}: id {echo(record['id'])} repeats the one at {seen[record['id']]}; ids must be "
                              f"unique (drop the id column from data.columns to number records automatically).")
        seen[record["id"]] = where
        records.append(record)
        if spec.max_samples and len(records) >= spec.max_samples:
            break
    if not records:
        raise EngineError(f"{source} holds no usable records; check the file, data.preset and data.columns.")
    log.info("loaded %d records from %s", len(records), source)
    return records


def _rows(spec: DataSpec, preset: Preset, mapping: dict) -> tuple[str, Iterator[Row]]:
    """(a name for messages, the rows) from data.path, the demo kit, or the hub."""
    if str(spec.path).strip():
        return _local_rows(Path(spec.path))
    if preset.name in DEMO_PRESETS:
        from engine.demo.kit import ensure_demo_kit  # lazy: builds the kit on first use

        kit = ensure_demo_kit()
        return _local_rows(kit.instructions_file if preset.name == "demo" else kit.reasoning_file)
    if not preset.on_hub:
        raise EngineError("data.path is empty; the local preset needs a JSONL, JSON, CSV or Parquet file.")
    return preset.hub_id, _hub_rows(preset, spec.max_samples, lambda columns, label:
                                    check_columns(columns, mapping, spec.format, label))


def _local_rows(path: Path) -> tuple[str, Iterator[Row]]:
    try:
        rows = iter_rows(path)
        first = next(rows, None)  # surfaces a missing file or an unknown format now, as an EngineError
    except FileProblem as exc:
        raise EngineError(str(exc)) from None

    def chained() -> Iterator[Row]:
        if first is not None:
            yield first
        try:
            yield from rows
        except FileProblem as exc:
            raise EngineError(str(exc)) from None

    return str(path), chained()


_NETWORK_ERRORS = ("ConnectionError", "Timeout", "OfflineModeIsEnabled", "LocalEntryNotFoundError",
                   "HfHubHTTPError", "HTTPError", "ConnectError", "ProxyError", "SSLError", "DatasetNotFoundError",
                   "ReadTimeout", "ConnectTimeout", "NameResolutionError", "MaxRetryError")


def offline_message(preset: Preset, exc: BaseException) -> str:
    """The one sentence shown when a hub preset (or the hub data set of data.hub_id) cannot be fetched."""
    who, mapping = (("data.hub_id", "data.columns are") if preset.name == "hub"
                    else (f"data preset {echo(preset.name)}", "the preset's column mapping is"))
    return (f"{who} needs {preset.hub_id} from the Hugging Face hub, which cannot be reached "
            f"({type(exc).__name__}); to use a copy instead, set data.path to a local JSONL, CSV or Parquet file "
            f"of it and {mapping} applied to that file.")


def check_columns(columns: list[str], mapping: dict, fmt: str, label: str) -> None:
    """A hub table has the columns the mapping (and format) read, or one sentence naming the missing column and
    the available ones — said once, before any row is read."""
    fmt = detect_format(columns, fmt)
    mapped_chat = mapping.get("messages") not in (None, "messages") and any(
        c in columns for c in _refs(mapping.get("messages")))
    if fmt in CHAT_COLUMNS or mapped_chat:
        needed = {"messages": (*_refs(mapping.get("messages", "messages")), CHAT_COLUMNS.get(fmt, "messages"))}
    else:
        needed = {name: _refs(mapping.get(name)) for name in REQUIRED_FIELDS}
        if fmt == "alpaca":
            needed = {name: (*refs, ALPACA_COLUMNS[name]) for name, refs in needed.items()}
    for name, refs in needed.items():
        refs = tuple(dict.fromkeys(r for r in refs if r))
        if not any(r in columns for r in refs):
            raise EngineError(f"data.columns.{name}: {label} has no column {' or '.join(refs) or name}; its columns "
                              f"are {', '.join(columns)}; map {name} to one of them in data.columns.")


def _refs(ref: Any) -> tuple[str, ...]:
    return () if ref is None else (ref,) if isinstance(ref, str) else tuple(ref)


def _is_network_error(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, (ConnectionError, TimeoutError)) or any(n in names for n in _NETWORK_ERRORS)


def _hub_rows(preset: Preset, max_samples: int, check: Callable[[list[str], str], None]) -> Iterator[Row]:
    """Rows of the preset's hub split; only the needed slice is prepared when there is no row filter."""
    import datasets

    split = preset.split
    if max_samples and not preset.row_filter:
        split = f"{split}[:{max_samples}]"
    try:
        table = datasets.load_dataset(preset.hub_id, preset.config, split=split, revision=preset.revision)
    except Exception as exc:  # noqa: BLE001 — network failures come as many types (requests, httpx, hub errors)
        if _is_network_error(exc):
            raise EngineError(offline_message(preset, exc)) from None
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise EngineError(f"data preset {echo(preset.name)}: loading {preset.hub_id} failed ({detail}); set data.path "
                          f"to a local copy to use it without the hub.") from None
    label = f"{preset.hub_id} ({preset.config + ', ' if preset.config else ''}{preset.split})"
    check(list(table.column_names or []), label)
    for number, row in enumerate(table, start=1):
        yield f"{label} row {number}", row
