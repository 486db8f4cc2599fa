"""The run store: one folder per run under the user data directory, and an SQLite index the studio lists.

Layout of a run::

    <data dir>/runs/<run id>/
        spec.yaml        the spec as run
        events.jsonl     every event, in order (replayable)
        run.json         status, stage, pid, times, scores (the index mirrors it)
        models/<stage>/  final models (save_pretrained + README.md model card)
        checkpoints/<stage>/checkpoint-N/
        eval.json, eval.md
        tensorboard/<stage>/  TensorBoard event files (the metric events, under the same names)
        lock             held (flock) by the one engine writing the run, with its pid

The store trusts nothing it reads: a run id must match the store's own format (so ``../..`` or an absolute path
never names a folder), run folders and the files in them are opened without following symbolic links, every
file that says "done" is written to a temporary name and renamed, a damaged ``run.json`` marks its run damaged
instead of stopping the listing, and a damaged or missing index is rebuilt from the run folders.

Stdlib + platformdirs only: the studio imports this module.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import secrets
import shutil
import sqlite3
import stat
import time
from dataclasses import dataclass
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.contract.run_paths import RunPaths
from engine.contract.run_files import (  # re-exported for the store's users
    RunLock, RunLocked, RunNotFound, StoreError, clean_scores, json_safe, read_inside, time_field,
    write_atomic)
from engine.contract.run_status import (  # noqa: F401 - pid_alive re-exported
    STORED_STATES, engine_alive, pid_alive, run_status)
from engine.contract.safe_json import safe_json_loads, shorten, unencodable

log = logging.getLogger(__name__)

APP_NAME = "compression-studio"
HOME_ENV = "COMPRESSION_STUDIO_HOME"
RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[a-z0-9-]{1,32}-[0-9a-f]{4}")  # what new_run_id() makes, nothing else
RUN_ID_EXAMPLE = "20261201-124500-my-run-1a2b"


def data_dir() -> Path:
    """The user data directory (``$COMPRESSION_STUDIO_HOME`` overrides it, e.g. in tests)."""
    override = os.environ.get(HOME_ENV)
    if override:
        path = Path(override).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    if path.exists() and not path.is_dir():
        raise StoreError(f"the data folder {path} is a file, not a folder; point {HOME_ENV} at a folder (or move "
                         "the file away).")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the data folder {path} ({exc.strerror}); point {HOME_ENV} at a "
                         "writable folder.") from None
    return path


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
        return engine_alive(self.path, self.status, self.pid)

    def current_status(self) -> str:
        """The status to show and act on: the stored one, or ``interrupted`` (engine/contract/run_status.py)."""
        return run_status(self.path, self.status, self.pid)


def new_run_id(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:32] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"


def is_run_id(run_id: Any) -> bool:
    return isinstance(run_id, str) and RUN_ID.fullmatch(run_id) is not None


class RunStore:
    """Creates, updates, lists and deletes runs; run.json in each folder is the truth, the index a cache that is
    rebuilt from the folders whenever it is missing or damaged."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else data_dir()
        self.runs_dir = self.root / "runs"
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the run folder {self.runs_dir} ({exc.strerror}); point {HOME_ENV} "
                             "at a writable folder.") from None
        if not self.runs_dir.is_dir() or self.runs_dir.is_symlink():
            raise StoreError(f"{self.runs_dir} is not a folder; move it away or point {HOME_ENV} elsewhere.")
        self.index_path = self.root / "runs.sqlite"
        self._index_ok = True
        if self.index_path.is_symlink():  # SQLite would write through it, outside the store: set it aside
            self._rebuild_index(OSError(errno.ELOOP, "the index is a symbolic link"))
        self._index("CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, name TEXT, status TEXT, stage TEXT,"
                    " created REAL, updated REAL, pid INTEGER, scores TEXT)")

    # ---- the index: a cache, never a reason to fail -------------------------------------------------------

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.index_path, timeout=10)
        try:
            with db:  # commits (or rolls back) the transaction
                yield db
        finally:
            db.close()

    def _index(self, sql: str, params: Any = (), *, many: bool = False) -> list:
        """Run one statement on the index; a damaged index is moved aside and rebuilt from the run folders, and
        if even that fails the store works from the folders alone."""
        for attempt in range(2):
            if not self._index_ok:
                return []
            try:
                with self._db() as db:
                    cursor = db.executemany(sql, params) if many else db.execute(sql, params)
                    return cursor.fetchall()
            except sqlite3.Error as exc:
                if attempt == 0:
                    self._rebuild_index(exc)
        self._index_ok = False
        return []

    def _rebuild_index(self, problem: Exception) -> None:
        log.warning("the run index %s is damaged (%s); rebuilding it from the run folders", self.index_path, problem)
        try:
            if self.index_path.is_dir() and not self.index_path.is_symlink():
                raise OSError(errno.EISDIR, "is a folder", str(self.index_path))
            self.index_path.replace(self.index_path.with_name(f"runs.sqlite.damaged-{int(time.time())}"))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot move the damaged index aside (%s); listing runs from their folders", exc)
            self._index_ok = False
            return
        try:
            with self._db() as db:
                db.execute("CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, name TEXT, status TEXT, "
                           "stage TEXT, created REAL, updated REAL, pid INTEGER, scores TEXT)")
                for record in self._scan():
                    if record.status != "damaged":
                        db.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?)", _row(record))
        except sqlite3.Error as exc:
            log.warning("cannot rebuild the index (%s); listing runs from their folders", exc)
            self._index_ok = False

    # ---- runs ---------------------------------------------------------------------------------------------

    def create(self, name: str, spec_text: str) -> RunPaths:
        if not _text(name) or unencodable(spec_text) is not None:  # nothing is made for a run that cannot be stored
            raise StoreError(f"the run name {shorten(name, 60)!r} or its spec holds a character that is not text (a "
                             "lone surrogate); write the text itself.")
        paths = RunPaths(self.runs_dir / new_run_id(name))
        paths.root.mkdir(parents=True)
        write_atomic(paths.spec, spec_text)
        now = time.time()
        self._write(paths, {"id": paths.id, "name": name, "status": "created", "stage": "", "created": now,
                            "updated": now, "pid": 0, "scores": {}})
        return paths

    def paths(self, run_id: str) -> RunPaths:
        """The folders of an existing run; RunNotFound (a sentence) for anything that is not one of this store's
        run ids, for a run folder that is a symbolic link, and for a folder without run.json."""
        if not is_run_id(run_id):
            raise RunNotFound(f"{shorten(run_id, 80)!r} is not a run id (run ids look like {RUN_ID_EXAMPLE}); "
                              "`compression-engine runs` lists them.")
        paths = RunPaths(self.runs_dir / run_id)
        if paths.root.is_symlink() or not paths.root.is_dir() or paths.info.is_symlink() or not paths.info.exists():
            raise RunNotFound(f"there is no run {run_id!r} in {self.runs_dir}; `compression-engine runs` lists them.")
        return paths

    def _read_info(self, paths: RunPaths) -> dict:
        """run.json of a run; StoreError (a sentence) when it is damaged."""
        try:
            info = safe_json_loads(read_inside(paths.info))
        except (OSError, ValueError) as exc:  # a FIFO or folder in its place, bad UTF-8, JSON that is not data
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else shorten(exc, 160)
            raise StoreError(f"run {paths.id} is damaged: its run.json cannot be read ({reason}); delete the run "
                             "or repair the file.") from None
        if not isinstance(info, dict):
            raise StoreError(f"run {paths.id} is damaged: its run.json holds no settings; delete the run.")
        return info

    def update(self, run_id: str, **changes: Any) -> RunRecord:
        paths = self.paths(run_id)
        info = self._read_info(paths)
        if "scores" in changes:
            changes["scores"] = {**clean_scores(info.get("scores"), run_id), **changes["scores"]}
        info.update(changes, updated=time.time())
        record = self._record(info, paths)  # a record that cannot be made is not written
        self._write(paths, info)
        return record

    def _write(self, paths: RunPaths, info: dict) -> None:
        write_atomic(paths.info, json.dumps(json_safe(info), indent=2, default=str), in_place_fallback=True)
        self._index("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?)", _row(self._record(info, paths)))

    def get(self, run_id: str) -> RunRecord:
        paths = self.paths(run_id)
        return self._record(self._read_info(paths), paths)

    def _record(self, info: dict, paths: RunPaths) -> RunRecord:
        """The record run.json describes, every field checked (the file may have been edited or damaged);
        StoreError (a sentence naming the field) when one is unusable. Unusable scores are dropped, not fatal."""
        status = info.get("status")
        if status not in STORED_STATES:
            raise StoreError(f"run {paths.id} is damaged: its run.json has status {shorten(status, 40)!r}, not one "
                             f"of {', '.join(STORED_STATES)}; delete the run or repair the file.")
        created = time_field(info.get("created"))
        updated = time_field(info.get("updated") or created)
        pid = info.get("pid") or 0
        for name, ok in (("name", _text(info.get("name"))), ("created", created is not None),
                         ("updated", updated is not None), ("stage", _text(info.get("stage") or "")),
                         ("pid", isinstance(pid, int) and not isinstance(pid, bool) and 0 <= pid < 2**31)):
            if not ok:
                raise StoreError(f"run {paths.id} is damaged: its run.json has no usable {name} "
                                 f"({shorten(info.get(name), 40)!r}); delete the run or repair the file.")
        assert created is not None and updated is not None  # checked just above, for the type checker
        return RunRecord(id=paths.id, name=info["name"], status=status, stage=info.get("stage") or "",
                         created=created, updated=updated, pid=pid, scores=clean_scores(info.get("scores"), paths.id),
                         path=paths.root)

    def _run_folders(self) -> dict[str, float]:
        """Run folders on disk (real folders named like a run id, with a run.json) → their run.json's mtime;
        infinity for a run.json that is not a regular file (a FIFO, a folder), so no index row answers for it."""
        found = {}
        for folder in self.runs_dir.iterdir():
            if is_run_id(folder.name) and not folder.is_symlink():
                try:
                    st = (folder / "run.json").lstat()
                except OSError:
                    continue
                found[folder.name] = st.st_mtime if stat.S_ISREG(st.st_mode) else math.inf
        return found

    def _read_record(self, run_id: str) -> RunRecord:
        """A run's record from its run.json; a damaged run.json gives status "damaged"."""
        paths = RunPaths(self.runs_dir / run_id)
        try:
            return self._record(self._read_info(paths), paths)
        except StoreError:
            created = _mtime(paths.root)
            return RunRecord(id=run_id, name=run_id, status="damaged", stage="", created=created, updated=created,
                             pid=0, scores={}, path=paths.root)

    def _scan(self) -> list[RunRecord]:
        """Every run folder's record from its run.json (a damaged one as status "damaged")."""
        return [self._read_record(run_id) for run_id in self._run_folders()]

    def list(self) -> list[RunRecord]:
        """All runs, newest first. The index answers for runs whose run.json has not changed since it was
        indexed; folders missing from it (copied in, index lost) or changed behind its back are read again, and
        a run whose run.json is damaged is listed with status "damaged"."""
        rows = self._index("SELECT id, name, status, stage, created, updated, pid, scores FROM runs")
        indexed = {record.id: record for record in map(self._index_record, rows) if record is not None}
        on_disk = self._run_folders()
        records = []
        for run_id, mtime in on_disk.items():
            known = indexed.get(run_id)
            # the index answers only for a run.json written when the row was (its mtime next to the row's time):
            # a row whose time is wrong, in the future included, never outranks the file
            if known is not None and abs(mtime - known.updated) <= 2:
                records.append(known)
                continue
            record = self._read_record(run_id)
            records.append(record)
            if record.status != "damaged":
                self._index("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?)", _row(record))
        gone = set(indexed) - set(on_disk)
        if gone:
            self._index("DELETE FROM runs WHERE id = ?", [(i,) for i in gone], many=True)
        return sorted(records, key=lambda r: r.created, reverse=True)

    def _index_record(self, row: Any) -> RunRecord | None:
        """A record from an index row, or None when any field is not what the store writes (the index is a
        cache that anything may have damaged: such a row is read again from its run.json)."""
        try:
            run_id, name, status, stage, created, updated, pid, scores = row
            scores = safe_json_loads(scores) if isinstance(scores, str) else None
        except (TypeError, ValueError):
            return None
        created, updated = time_field(created), time_field(updated)
        if not (is_run_id(run_id) and _text(name) and status in STORED_STATES and _text(stage)
                and created is not None and updated is not None and isinstance(scores, dict)
                and isinstance(pid, int) and 0 <= pid < 2**31):
            return None
        return RunRecord(id=run_id, name=name, status=status, stage=stage, created=created, updated=updated,
                         pid=pid, scores=clean_scores(scores, run_id), path=self.runs_dir / run_id)

    def delete(self, run_id: str) -> None:
        """Delete a run's folder; refused (StoreError, a sentence) while an engine writes it."""
        paths = self.paths(run_id)
        holder = RunLock.holder(paths)
        if holder is not None:
            raise RunLocked(f"run {run_id} is still running (pid {holder or '?'}); cancel it first.")
        try:
            record = self._record(self._read_info(paths), paths)
        except StoreError:
            record = None  # a damaged run may always be deleted
        if record is not None and record.is_alive():
            raise RunLocked(f"run {run_id} is still running (pid {record.pid}); cancel it first.")
        self._index("DELETE FROM runs WHERE id = ?", (run_id,))
        shutil.rmtree(paths.root)  # never follows a link inside the folder (fd-based on Linux)


def _text(value: Any) -> bool:
    """Text the index and every screen can hold (a lone surrogate from a "\\ud800" escape cannot be stored)."""
    return isinstance(value, str) and unencodable(value) is None


def _row(record: RunRecord) -> tuple:
    return (record.id, record.name, record.status, record.stage, record.created, record.updated, record.pid,
            json.dumps(json_safe(record.scores), default=str))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
