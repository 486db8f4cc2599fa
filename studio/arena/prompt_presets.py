"""Prompt presets for the arena, drawn from a run's held-out data, so the user probes the kind of task the
student was trained for.

Sources, first found wins: the run's evaluation predictions (``work/<stage>/predictions-<model>.jsonl``: the
held-out test split, with the reference answer); the local data file named in the run's spec (JSONL, JSON or
CSV, with its column mapping); for demo runs, and when no run is chosen, the demo kit's data. Stdlib only.
"""
from __future__ import annotations

import csv
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from engine.contract.vocabulary import DEMO_PRESETS
from engine.contract.safe_json import load_json_file, safe_json_loads

log = logging.getLogger(__name__)

MAX_SCAN = 5000  # records read from a data file at most: presets are a sample, not the data set


@dataclass(frozen=True)
class Preset:
    """One prompt the user can send; ``reference`` is the data set's answer (shown, not sent)."""

    prompt: str
    reference: str = ""
    category: str = ""
    origin: str = ""

    @property
    def title(self) -> str:
        first = self.prompt.strip().splitlines()[0] if self.prompt.strip() else ""
        short = first if len(first) <= 70 else first[:67] + "…"
        return f"[{self.category}] {short}" if self.category else short


def _jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if index >= MAX_SCAN:
                return
            try:
                obj = safe_json_loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj


def _records(path: Path) -> Iterator[dict]:
    if not path.is_file():  # a FIFO or device named like data would block the arena: only regular files
        return
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl(path)
    elif suffix == ".json":
        data = load_json_file(path, limit=256 << 20)  # a data set, not settings: a larger limit
        rows = data if isinstance(data, list) else next(
            (v for v in data.values() if isinstance(v, list)), []) if isinstance(data, dict) else []
        yield from (row for row in rows[:MAX_SCAN] if isinstance(row, dict))
    elif suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            for index, row in enumerate(reader):
                if index >= MAX_SCAN:
                    return
                yield row
    # Parquet needs pyarrow, which the studio does not import: such runs fall back to the demo data.


def join_prompt(instruction: str, context: str = "") -> str:
    """The user message for a record: the instruction, then its context (as the engine's presets do)."""
    instruction, context = (instruction or "").strip(), (context or "").strip()
    return f"{instruction}\n\n{context}" if context else instruction


def _from_predictions(run_path: Path) -> list[Preset]:
    files = sorted(run_path.glob("work/*/predictions-*.jsonl"))
    if not files:
        return []
    return [Preset(prompt=r.get("prompt", ""), reference=r.get("reference", ""), category=r.get("category") or "",
                   origin=f"held-out ({files[0].parent.name})") for r in _jsonl(files[0]) if r.get("prompt")]


def _spec_data(run_path: Path) -> Any:
    """The run's DataSpec, or None when its spec cannot be read."""
    try:
        from engine.contract.spec import load_spec

        return load_spec(run_path / "spec.yaml").data
    except Exception as exc:  # noqa: BLE001 - no readable spec: no presets from it
        log.info("no spec data for presets in %s: %s", run_path, exc)
        return None


def _from_spec_data(data: Any) -> list[Preset]:
    if data is None or not data.path or not Path(data.path).expanduser().is_file():
        return []
    columns = {"instruction": "instruction", "context": "context", "response": "response", "category": "category",
               **(data.columns or {})}
    presets = []
    try:
        for row in _records(Path(data.path).expanduser()):
            prompt = join_prompt(str(row.get(columns["instruction"]) or ""), str(row.get(columns["context"]) or ""))
            if prompt:
                presets.append(Preset(prompt=prompt, reference=str(row.get(columns["response"]) or ""),
                                      category=str(row.get(columns["category"]) or ""), origin=Path(data.path).name))
    except (OSError, ValueError, csv.Error) as exc:
        log.info("cannot read %s for presets: %s", data.path, exc)
    return presets


def _from_demo_kit(home: Path | None, reasoning: bool = False) -> list[Preset]:
    if home is None:
        from engine.contract.runs import data_dir

        home = data_dir()
    path = home / "demo-kit" / "v1" / "data" / ("reasoning.jsonl" if reasoning else "instructions.jsonl")
    if not path.is_file():
        return []
    return [Preset(prompt=join_prompt(r.get("instruction", ""), r.get("context", "")),
                   reference=r.get("response", ""), category=r.get("category") or "", origin="demo kit")
            for r in _jsonl(path) if r.get("instruction")]


def prompt_presets(run_path: str | Path | None = None, *, limit: int = 25, seed: int = 0,
                   home: Path | None = None) -> list[Preset]:
    """Up to ``limit`` presets, sampled reproducibly (``seed``) from the first source that has any."""
    if run_path is None:
        candidates = _from_demo_kit(home)
    else:
        data = _spec_data(Path(run_path))
        candidates = _from_predictions(Path(run_path)) or _from_spec_data(data)
        if not candidates and data is not None and data.preset in DEMO_PRESETS:
            candidates = _from_demo_kit(home, reasoning=data.preset == "demo_reasoning")
        # a hub data set (Dolly, BugNet…) before its evaluation has run: no presets rather than unrelated ones
    if len(candidates) > limit:
        candidates = random.Random(seed).sample(candidates, limit)
    return candidates

