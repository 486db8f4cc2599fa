"""Task data for Compression Studio: presets, loading, validation, splits and formatting.

Public API (imported lazily so that ``engine.data.preview`` stays light for the GUI)::

    load_records(spec: DataSpec) -> list[dict]                      # canonical records
    split_records(records, spec) -> Splits(train, validation, test)
    prompt_messages(record, preset) -> [{"role": "user", "content": ...}]
    prompt_texts(tokenizer, records, preset) -> list[str]
    tokenize_for_sft(tokenizer, records, max_length, preset) -> datasets.Dataset
    PRESETS, get_preset(name) -> Preset; preview_file(path, columns=None, limit=20) -> Preview
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_records": "engine.data.loading", "offline_message": "engine.data.loading",
    "split_records": "engine.data.splits", "Splits": "engine.data.splits",
    "prompt_messages": "engine.data.formatting", "prompt_texts": "engine.data.formatting",
    "tokenize_for_sft": "engine.data.formatting", "encode_example": "engine.data.formatting",
    "PRESETS": "engine.data.presets", "Preset": "engine.data.presets", "get_preset": "engine.data.presets",
    "render_prompt": "engine.data.presets",
    "preview_file": "engine.data.preview", "Preview": "engine.data.preview",
    "CANONICAL_FIELDS": "engine.data.records", "canonical_record": "engine.data.records",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
