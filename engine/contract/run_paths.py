"""A run's folder and the paths in it (``RunPaths``): where each run file lives, stage folders that never lead
out of the run, and eval.json / eval.md, which several stages share. Stdlib only: the studio imports it (through
``engine.contract.runs``, which re-exports it)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from engine.contract.run_files import StoreError, append_inside, json_safe, read_inside, write_atomic
from engine.contract.safe_json import safe_json_loads

log = logging.getLogger(__name__)


@dataclass
class RunPaths:
    root: Path

    @property
    def id(self) -> str:
        return self.root.name

    @property
    def spec(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def info(self) -> Path:
        return self.root / "run.json"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def eval_json(self) -> Path:
        return self.root / "eval.json"

    @property
    def eval_md(self) -> Path:
        return self.root / "eval.md"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files, one folder per stage (engine/runner/tensorboard_log.py)."""
        return self.root / "tensorboard"

    def inside(self, *parts: str) -> Path:
        """``root/parts…``, refusing a path that a symbolic link inside the run folder leads out of it."""
        path = self.root.joinpath(*parts)
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise StoreError(f"{path} leads out of the run folder (through '..' or a symbolic link); nothing "
                             "outside a run is read or written, so name a stage of the run (or remove the link).")
        return path

    def model(self, stage: str) -> Path:
        return self.inside("models", stage)

    def checkpoints(self, stage: str) -> Path:
        return self.inside("checkpoints", stage)

    def merge_eval(self, updates: dict) -> dict:
        """Merge top-level keys into eval.json (stages share the file: models, quantization, grpo, …)."""
        current = self._read_eval()
        current.update(updates)
        self._write_eval(current)
        return current

    def add_stage_report(self, section: str, stage: str, report: dict, markdown: str) -> None:
        """One stage's report into eval.json under ``section.stage`` (next to what other stages wrote; an
        unreadable file is started afresh) and its table at the end of eval.md."""
        current = self._read_eval()
        current.setdefault(section, {})[stage] = report
        self._write_eval(current)
        append_inside(self.eval_md, markdown)

    def _read_eval(self) -> dict:
        try:
            current = safe_json_loads(read_inside(self.eval_json))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:  # JSONProblem is a ValueError
            log.warning("eval.json of run %s is unreadable (%s); starting it afresh", self.id, exc)
            return {}
        return current if isinstance(current, dict) else {}

    def _write_eval(self, data: dict) -> None:
        write_atomic(self.eval_json, json.dumps(json_safe(data), indent=2, ensure_ascii=False, default=str))

    def stage_dir(self, stage: str) -> Path:
        """Scratch space of a stage (caches such as sequence-level KD's teacher answers)."""
        return self.inside("work", stage)
