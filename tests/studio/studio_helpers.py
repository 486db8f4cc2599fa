"""Helpers shared by the studio tests."""
from __future__ import annotations

import time
from pathlib import Path


def wait_until(qtbot, condition, timeout: float = 20.0) -> None:
    qtbot.waitUntil(condition, timeout=int(timeout * 1000))


def spec_file(tmp_path: Path, stages: str = "  - {kind: sft, name: student_sft, model: student}\n",
              name: str = "t") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nstudent: {{source: demo:student}}\ndata: {{preset: demo}}\nstages:\n{stages}",
                    encoding="utf-8")
    return path


def until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll outside Qt (subprocess helpers)."""
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
