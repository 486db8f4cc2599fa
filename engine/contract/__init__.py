"""The contract between the engine and the studio: everything both sides must agree on, and nothing heavier.

- :mod:`engine.contract.spec` — run specs (typed, validated dataclasses; their help text is the GUI's tooltips).
- :mod:`engine.contract.stages` and :mod:`engine.contract.stage_kinds` — one class per stage kind, and the table
  that says for each kind its class, recipe, whether it trains or runs on rank 0 only, its memory estimate and
  its wizard page.
- :mod:`engine.contract.protocol` — the JSON-lines events and commands, and the metric-name table.
- :mod:`engine.contract.runs` — the run store: folders, ``run.json``, the SQLite index.
- :mod:`engine.contract.data` — data presets, canonical records, file readers and the preview the wizard shows.

Stdlib + PyYAML (+ platformdirs) only. The studio may import this package and nothing else from the engine; the
import-linter contracts in ``pyproject.toml`` enforce both rules.
"""
