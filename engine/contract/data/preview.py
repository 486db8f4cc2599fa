"""A quick look at a local data file for the GUI's data page: its columns, the first rows as canonical records,
and the first problems (``FILE:LINE: what is wrong and what to do``), validated exactly as the loader does.

Stdlib only (the studio imports it); Parquet needs pyarrow, imported only for a Parquet file.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.contract.data.readers import FileProblem, iter_rows
from engine.contract.data.records import RecordProblem, canonical_record, merge_mapping

MAX_ERRORS = 5  # stop reading after this many problems: the user fixes the first ones first


@dataclass
class Preview:
    columns: list[str] = field(default_factory=list)  # the file's own column names (first row's keys)
    rows: list[dict] = field(default_factory=list)  # canonical records of the first valid rows
    errors: list[str] = field(default_factory=list)  # "FILE:LINE: problem" sentences, at most MAX_ERRORS
    total_rows_read: int = 0  # rows looked at, valid or not

    @property
    def ok(self) -> bool:
        return not self.errors


def preview_file(path: str | Path, columns: Mapping[str, str] | None = None, limit: int = 20,
                 preset: str = "local", fmt: str = "auto", roles: Mapping[str, str] | None = None) -> Preview:
    """Read up to ``limit`` valid rows of ``path`` mapped through ``columns`` (canonical → file column) on top of
    ``preset``'s mapping, in layout ``fmt`` (data.format) with ``roles`` (data.roles); stop early at
    :data:`MAX_ERRORS` problems."""
    from engine.contract.data.presets import get_preset  # stdlib-only as well; imported here to keep the top light

    result = Preview()
    try:
        p = get_preset(preset)
        mapping = merge_mapping(p.columns, columns)
    except (ValueError, RecordProblem) as exc:
        result.errors.append(str(exc))
        return result
    try:
        for index, (where, row) in enumerate(iter_rows(path)):
            result.total_rows_read += 1
            if isinstance(row, dict) and not result.columns:
                result.columns = [str(c) for c in row]
            try:
                if isinstance(row, RecordProblem):
                    raise row
                if not p.accepts(row):
                    continue
                record = canonical_record(row, mapping, default_id=f"{p.name}-{index:06d}",
                                          default_language=p.language, default_category=p.category, fmt=fmt,
                                          roles=roles)
                result.rows.append(p.finish(record, row) if p.finish else record)
            except RecordProblem as exc:
                result.errors.append(f"{where}: {exc}")
            if len(result.errors) >= MAX_ERRORS or len(result.rows) >= limit:
                break
    except FileProblem as exc:
        result.errors.append(str(exc))
    return result
