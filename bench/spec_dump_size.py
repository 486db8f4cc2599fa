"""How long a dumped spec is: the lines each example was written with, what the landed dumper wrote (every block
of every stage kind in every stage, defaults included) and what dump_spec writes now (what differs from the
defaults), and whether the dump loads back to the same spec.

    .venv/bin/python bench/spec_dump_size.py
"""
from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.contract.spec import (STAGE_KIND_TABLE, RunSpec, build, dump_spec, load_spec,  # noqa: E402 - after the path
                                  parse_spec_text, to_dict)
from engine.demo.pipeline import demo_spec  # noqa: E402 - after the path

log = logging.getLogger("bench.spec_dump_size")


def landed_dump(spec: RunSpec) -> str:
    """The spec as the landed dumper wrote it: every stage holding every kind's settings at their defaults."""
    every: dict = {}
    for row in STAGE_KIND_TABLE.values():
        every.update(to_dict(row.stage_class()))
    stages = [{**copy.deepcopy(every), **to_dict(s)} for s in spec.stages]  # own copies: no YAML anchors
    return yaml.safe_dump({**to_dict(spec), "stages": stages},
                          sort_keys=False, allow_unicode=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("engine.contract.stages").setLevel(logging.ERROR)  # the landed dumps' warnings: expected
    rows = [(p.name, len(p.read_text().splitlines()), load_spec(p)) for p in sorted((ROOT / "examples").glob("*.yaml"))]
    rows.append(("demo spec (engine/demo/pipeline.py)", 0, demo_spec()))
    log.info("| spec | lines written | landed dump | dump now | round trip |")
    log.info("|---|---|---|---|---|")
    for name, written, spec in rows:
        now = dump_spec(spec)
        same = build(RunSpec, parse_spec_text(now), "spec") == spec
        old = landed_dump(spec)
        assert build(RunSpec, parse_spec_text(old), "spec") == spec  # the landed format still loads
        log.info("| %s | %s | %d | %d | %s |", name, written or "—", len(old.splitlines()), len(now.splitlines()),
                 "exact" if same else "DIFFERS")


if __name__ == "__main__":
    main()
