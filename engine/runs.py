"""The run store: one folder per run under the user data directory, and an SQLite index the studio lists.

Layout of a run::

    <data dir>/runs/<run id>/
        spec.yaml        the spec as run
        events.jsonl     every event, in order (replayable)
        run.json         status, stage, pid, times, scores (the index mirrors it)
        models/<stage>/  final models (save_pretrained + README.md model card)
        checkpoints/<stage>/checkpoint-N/
        eval.json, eval.md

Stdlib + platformdirs only: the studio imports this module.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

APP_NAME = "compression-studio"
HOME_ENV = "COMPRESSION_STUDIO_HOME"


def data_dir() -> Path:
    """The user data directory (``$COMPRESSION_STUDIO_HOME`` overrides it, e.g. in tests)."""
    override = os.environ.get(HOME_ENV)
    if override:
        path = Path(override).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


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
    def eval_json(self) -> Path:
        return self.root / "eval.json"

    @property
    def eval_md(self) -> Path:
        return self.root / "eval.md"

    def model(self, stage: str) -> Path:
        return self.root / "models" / stage

    def checkpoints(self, stage: str) -> Path:
        return self.root / "checkpoints" / stage

    def merge_eval(self, updates: dict) -> dict:
        """Merge top-level keys into eval.json (stages share the file: models, quantization, grpo, …)."""
        current = json.loads(self.eval_json.read_text(encoding="utf-8")) if self.eval_json.exists() else {}
        current.update(updates)
        self._write_eval(current)
        return current

    def add_stage_report(self, section: str, stage: str, report: dict, markdown: str) -> None:
        """One stage's report into eval.json under ``section.stage`` (next to what other stages wrote; an
        unreadable file is started afresh) and its table at the end of eval.md."""
        current: dict[str, Any] = {}
        if self.eval_json.exists():
            try:
                current = json.loads(self.eval_json.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                current = {}
        current.setdefault(section, {})[stage] = report
        self._write_eval(current)
        with open(self.eval_md, "a", encoding="utf-8") as f:
            f.write(markdown)

    def _write_eval(self, data: dict) -> None:
        tmp = self.eval_json.with_suffix(".tmp")  # atomic: a reader never sees half a file
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        tmp.replace(self.eval_json)

    def stage_dir(self, stage: str) -> Path:
        """Scratch space of a stage (caches such as sequence-level KD's teacher answers)."""
        return self.root / "work" / stage


@dataclass
class RunRecord:
    id: str
    name: str
    status: str
    stage: str
    created: float
    updated: float
    pid: int
    scores: dict
    path: Path

    def is_alive(self) -> bool:
        """Whether the engine process that owns this run still runs (a GUI restart follows it again)."""
        return self.status in ("running", "cancelling") and pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_run_id(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:32] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"


class RunStore:
    """Creates, updates, lists and deletes runs; run.json in each folder is the truth, the index a cache."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else data_dir()
        self.runs_dir = self.root / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.index_path = self.root / "runs.sqlite"
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, name TEXT, status TEXT, stage TEXT,"
                       " created REAL, updated REAL, pid INTEGER, scores TEXT)")

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.index_path, timeout=10)
        return db

    def create(self, name: str, spec_text: str) -> RunPaths:
        paths = RunPaths(self.runs_dir / new_run_id(name))
        paths.root.mkdir(parents=True)
        paths.spec.write_text(spec_text, encoding="utf-8")
        now = time.time()
        self._write(paths, {"id": paths.id, "name": name, "status": "created", "stage": "", "created": now,
                            "updated": now, "pid": 0, "scores": {}})
        return paths

    def paths(self, run_id: str) -> RunPaths:
        paths = RunPaths(self.runs_dir / run_id)
        if not paths.info.exists():
            raise KeyError(f"no run {run_id!r} in {self.runs_dir}")
        return paths

    def update(self, run_id: str, **changes: Any) -> RunRecord:
        paths = self.paths(run_id)
        info = json.loads(paths.info.read_text(encoding="utf-8"))
        if "scores" in changes:
            changes["scores"] = {**info.get("scores", {}), **changes["scores"]}
        info.update(changes, updated=time.time())
        self._write(paths, info)
        return self._record(info, paths)

    def _write(self, paths: RunPaths, info: dict) -> None:
        tmp = paths.info.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
        tmp.replace(paths.info)  # atomic: a reader never sees half a file
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?)",
                       (info["id"], info["name"], info["status"], info["stage"], info["created"],
                        info["updated"], info["pid"], json.dumps(info.get("scores", {}))))

    def get(self, run_id: str) -> RunRecord:
        paths = self.paths(run_id)
        return self._record(json.loads(paths.info.read_text(encoding="utf-8")), paths)

    def _record(self, info: dict, paths: RunPaths) -> RunRecord:
        return RunRecord(id=info["id"], name=info["name"], status=info["status"], stage=info["stage"],
                         created=info["created"], updated=info["updated"], pid=int(info.get("pid", 0)),
                         scores=info.get("scores", {}), path=paths.root)

    def list(self) -> list[RunRecord]:
        """All runs, newest first; folders missing from the index (copied in, index lost) are re-indexed."""
        with self._db() as db:
            indexed = {row[0] for row in db.execute("SELECT id FROM runs")}
        on_disk = {p.name for p in self.runs_dir.iterdir() if (p / "run.json").exists()}
        for run_id in on_disk - indexed:
            paths = RunPaths(self.runs_dir / run_id)
            self._write(paths, json.loads(paths.info.read_text(encoding="utf-8")))
        if indexed - on_disk:
            with self._db() as db:
                db.executemany("DELETE FROM runs WHERE id = ?", [(i,) for i in indexed - on_disk])
        with self._db() as db:
            rows = db.execute("SELECT id, name, status, stage, created, updated, pid, scores FROM runs "
                              "ORDER BY created DESC").fetchall()
        return [RunRecord(id=r[0], name=r[1], status=r[2], stage=r[3], created=r[4], updated=r[5], pid=r[6],
                          scores=json.loads(r[7] or "{}"), path=self.runs_dir / r[0]) for r in rows]

    def delete(self, run_id: str) -> None:
        record = self.get(run_id)
        if record.is_alive():
            raise RuntimeError(f"run {run_id} is still running (pid {record.pid}); cancel it first.")
        shutil.rmtree(record.path)
        with self._db() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
