"""The hostile-input and fault suite (issue 14), driving the real CLI as a user would: every case ends in one
sentence on stderr (no traceback) or a contained failure, and nothing outside COMPRESSION_STUDIO_HOME changes.

Faults a test cannot cause from outside (a full disk, a loss that turns NaN) are injected by running the engine's
own ``python -m engine`` entry point after a small patch (``_engine_with``)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.contract.runs import RunLock, RunStore
from tests.integration.conftest import engine, events_of

TRAIN = "stages:\n  - {kind: sft, name: s, model: student, train: {max_steps: 1}}\n"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path) -> Path:
    """A fresh data folder per test (the damage these tests do must not leak into other tests)."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def sentinel(tmp_path) -> Path:
    """A folder outside the store that no command may touch; its snapshot is compared after each test."""
    path = tmp_path / "sentinel"
    (path / "sub").mkdir(parents=True)
    (path / "keep.txt").write_text("precious\n")
    (path / "sub" / "run.json").write_text('{"id": "x", "name": "x", "status": "finished", "stage": "", '
                                           '"created": 0, "updated": 0, "pid": 0, "scores": {}}')
    (path / "events.jsonl").write_text("")
    before = _snapshot(path)
    yield path
    assert _snapshot(path) == before, "a command changed files outside the store"


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _refused(result: subprocess.CompletedProcess, sentence: str, code: int = 2) -> None:
    """Exit code, one sentence on stderr containing ``sentence``, no traceback, stdout only JSON events."""
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert sentence in result.stderr, result.stderr[-2000:]
    events_of(result.stdout)


def _one_line(result: subprocess.CompletedProcess) -> None:
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _runs(home: Path) -> list[str]:
    runs = home / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.exists() else []


def _engine_with(home: Path, patch: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m engine ARGS`` after ``patch`` ran in the same process (fault injection)."""
    code = textwrap.dedent(patch) + "\nimport runpy, sys\nsys.argv = ['engine', *sys.argv[1:]]\n" \
        "runpy.run_module('engine', run_name='__main__')\n"
    env = {**os.environ, "COMPRESSION_STUDIO_HOME": str(home), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)


# ---- run ids are ids -------------------------------------------------------------------------------------

def test_no_store_command_reaches_outside_the_store(home, sentinel):
    store = RunStore(home)
    link = store.runs_dir / "20260101-000000-evil-abcd"
    link.symlink_to(sentinel / "sub", target_is_directory=True)  # a run folder that is a link out of the store
    for run_id in ("../..", str(sentinel), f"../../{sentinel.name}/sub", link.name,
                   "20260101-000000-evil-abcd/../../sentinel"):
        for command in (["runs", "delete", run_id], ["runs", "show", run_id], ["run", "--resume", run_id]):
            result = engine(home, *command)
            _refused(result, "not a run id" if run_id != link.name else "no run")
            _one_line(result)
    assert link.is_symlink()


def test_links_inside_a_run_are_not_followed(home, sentinel):
    store = RunStore(home)
    paths = store.create("x", "name: x\n" + TRAIN)
    store.update(paths.id, status="cancelled")
    paths.eval_md.symlink_to(sentinel / "keep.txt")
    shown = engine(home, "runs", "show", paths.id)
    assert shown.returncode == 0 and "precious" not in shown.stdout
    paths.events.symlink_to(sentinel / "events.jsonl")  # a resume must not append to an outside file
    _refused(engine(home, "run", "--resume", paths.id), "events.jsonl is a symbolic link")
    paths.events.unlink()
    paths.spec.unlink()
    paths.spec.symlink_to(sentinel / "keep.txt")  # nor read a spec from outside the store
    _refused(engine(home, "run", "--resume", paths.id), "spec.yaml is a symbolic link")
    deleted = engine(home, "runs", "delete", paths.id)
    assert deleted.returncode == 0 and not paths.root.exists()


# ---- bounded input ---------------------------------------------------------------------------------------

BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
    f"{n}: &{n} [{', '.join(['*' + p] * 10)}]" for p, n in zip("abcdefgh", "bcdefghi")]) + "\nname: x\n"


@pytest.mark.parametrize("content, sentence", [
    (BOMB, "expands to more than"),
    ("name: x\nstages: " + "[" * 2000 + "]" * 2000 + "\n", "nested too deeply"),
    (b"name: caf\xe9\n" + TRAIN.encode(), "is not UTF-8 text"),
    (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), "is not UTF-8 text"),
    ("", "must be a mapping"),
    ("name: 123\n" + TRAIN, "name: expected text, got 123"),
    ("name: x\n" + TRAIN.replace("max_steps: 1", "learning_rate: 10"), "learning_rate: 10 is too large"),
    ("name: x\n" + TRAIN.replace("max_steps: 1", "learning_rate: .nan"), "learning_rate: must be a finite"),
    ("name: x\n" + TRAIN.replace("max_steps: 1", "learning_rate: 1.0e300"), "too large"),
    ("name: x\n" + TRAIN.replace("max_steps: 1", "max_steps: 99999999999999999999"), "max_steps: 1e+20 is too"),
    ("name: x\n" + TRAIN.replace("max_steps: 1", "batch_size: -4"), "batch_size: must be > 0"),
    ("name: x\n" + TRAIN.replace("max_steps: 1", "batch_size: [1]"), "batch_size: expected an integer"),
    ("name: x\nstages:\n  - {kind: sft, name: '..'}\n", "stage.name: '..'"),
    ("name: x\nbogus: 1\n" + TRAIN, "unknown setting 'bogus'"),
    ("name: x\nname: y\n" + TRAIN, "'name' is given twice"),
])
def test_hostile_specs_end_in_a_sentence_and_create_nothing(tmp_path, home, sentinel, content, sentence):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = engine(home, "run", str(spec))
    _refused(result, sentence)
    _one_line(result)
    assert _runs(home) == []


def test_a_binary_data_file_is_a_sentence(tmp_path, studio_home, sentinel):
    data = tmp_path / "data.jsonl"
    data.write_bytes(b"\x00\xff\xfe\x89PNG" * 50)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: binary-data\ndata: {{preset: local, path: {data}}}\n" + TRAIN)
    before = _runs(studio_home)
    _refused(engine(studio_home, "run", str(spec)), "not UTF-8")
    assert _runs(studio_home) == before


def test_a_data_folder_that_is_a_file_is_a_sentence(tmp_path):
    home = tmp_path / "home"
    home.write_text("not a folder")
    for args in (["runs"], ["runs", "show", "20260101-000000-x-abcd"], ["run", str(tmp_path / "none.yaml")]):
        result = engine(home, *args)
        _refused(result, "is a file, not a folder")
    assert home.read_text() == "not a folder"


def test_a_damaged_index_and_a_damaged_run_json_stop_nothing(home):
    store = RunStore(home)
    good, bad = store.create("good", "name: good\n"), store.create("bad", "name: bad\n")
    store.update(good.id, status="finished")
    bad.info.write_bytes(b"\xff\x00 not json")
    store.index_path.write_bytes(b"SQLite format 3\x00" + b"\xde\xad" * 500)  # a torn, damaged index
    listing = engine(home, "runs")
    assert listing.returncode == 0 and "Traceback" not in listing.stderr, listing.stderr
    lines = {line.split()[0]: line.split()[1] for line in listing.stdout.splitlines()}
    assert lines == {good.id: "finished", bad.id: "damaged"}
    _refused(engine(home, "runs", "show", bad.id), f"run {bad.id} is damaged")
    _refused(engine(home, "run", "--resume", bad.id), "is damaged")
    assert engine(home, "runs", "show", good.id).returncode == 0
    assert engine(home, "runs", "delete", bad.id).returncode == 0
    assert [r.id for r in RunStore(home).list()] == [good.id]


# ---- one writer per run ------------------------------------------------------------------------------------

def test_a_locked_or_finished_run_is_not_resumed_or_deleted(home):
    store = RunStore(home)
    paths = store.create("x", "name: x\n" + TRAIN)
    store.update(paths.id, status="running", pid=os.getpid())
    with RunLock(paths):  # this test process plays the live engine
        for args in (["run", "--resume", paths.id], ["runs", "delete", paths.id]):
            result = engine(home, *args)
            _refused(result, f"(pid {os.getpid()})")
            _one_line(result)
    store.update(paths.id, status="finished")
    _refused(engine(home, "run", "--resume", paths.id), "has already finished")
    assert paths.root.exists()


# ---- faults during a real run --------------------------------------------------------------------------------

def _spec(tmp_path: Path, train: str) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: fault\nstudent: {source: demo:student}\ndata: {preset: demo, max_length: 64}\n"
                    f"stages:\n  - {{kind: sft, name: s, model: student, train: {{{train}}}}}\n", encoding="utf-8")
    return spec


def test_a_nan_loss_stops_the_stage_and_keeps_the_last_good_checkpoint(tmp_path, studio_home):
    home = studio_home  # the demo kit is built once per session there
    patch = """
        import math, torch
        real_step, steps = torch.optim.AdamW.step, []
        def step(self, *args, **kwargs):  # the third update blows every weight up, as lr 10 did
            out = real_step(self, *args, **kwargs)
            steps.append(1)
            if len(steps) >= 3:
                with torch.no_grad():
                    for group in self.param_groups:
                        for p in group["params"]:
                            p.mul_(math.nan)
            return out
        torch.optim.AdamW.step = step
    """
    spec = _spec(tmp_path, "max_steps: 8, batch_size: 2, logging_steps: 1, save_steps: 2")
    result = _engine_with(home, patch, "run", str(spec))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    events = events_of(result.stdout)
    errors = [e["data"]["message"] for e in events if e["type"] == "error"]
    assert len(errors) == 1 and "s diverged at step 4: the training loss is nan" in errors[0], errors
    assert events[-1]["type"] == "done" and events[-1]["data"]["status"] == "failed"
    root = home / "runs" / events[0]["run_id"]
    assert json.loads((root / "run.json").read_text())["status"] == "failed"
    assert not (root / "models" / "s").exists() and not (root / "work" / "s" / "done.json").exists()
    kept = sorted(p.name for p in (root / "checkpoints" / "s").iterdir())
    assert kept == ["checkpoint-2"] and (root / "checkpoints" / "s" / "checkpoint-2" / "complete").exists()
    mirror = [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()]
    assert mirror == events


def test_a_full_disk_ends_in_a_sentence_and_a_failed_run(tmp_path, studio_home):
    home = studio_home
    patch = """
        import errno, os, transformers
        real_open = os.open
        def no_space(*args, **kwargs):
            def full(path, flags, *rest):
                if flags & os.O_CREAT:
                    raise OSError(errno.ENOSPC, "No space left on device", str(path))
                return real_open(path, flags, *rest)
            os.open = full  # from the first checkpoint on, no new file fits
            raise OSError(errno.ENOSPC, "No space left on device", str(args[0].args.output_dir))
        transformers.Trainer._save_checkpoint = no_space
    """
    spec = _spec(tmp_path, "max_steps: 4, batch_size: 2, logging_steps: 1, save_steps: 2")
    result = _engine_with(home, patch, "run", str(spec))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "the disk is full" in result.stderr, result.stderr[-3000:]
    events = events_of(result.stdout)
    assert events[-2]["type"] == "error" and "the disk is full" in events[-2]["data"]["message"]
    assert events[-1]["type"] == "done" and events[-1]["data"]["status"] == "failed"
    root = home / "runs" / events[0]["run_id"]
    assert json.loads((root / "run.json").read_text())["status"] == "failed"  # never left "running"


def test_a_live_run_is_neither_resumed_nor_deleted_and_a_crashed_save_does_not_block_its_resume(
        tmp_path, studio_home):
    """A second engine on a live run is refused naming the live one; after it stopped, a torn events line and a
    half-written newest checkpoint (a crash mid-save) are repaired or skipped, and the run resumes."""
    spec = _spec(tmp_path, "max_steps: 400, batch_size: 4, logging_steps: 1, save_steps: 1000")
    env = {**os.environ, "COMPRESSION_STUDIO_HOME": str(studio_home), "HF_HUB_OFFLINE": "1"}
    err_file = open(tmp_path / "stderr.log", "w+", encoding="utf-8")  # closed below
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", str(spec)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=err_file, text=True, env=env)
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["type"] == "metric" and events[-1]["data"]["step"] >= 2:
            break
    run_id = events[0]["run_id"]
    for args in (["run", "--resume", run_id], ["runs", "delete", run_id]):
        result = engine(studio_home, *args)
        _refused(result, f"(pid {proc.pid})")
        _one_line(result)
    proc.stdin.write('{"type": "cancel"}\n')
    proc.stdin.close()
    rest = proc.stdout.read()  # through the same buffer the loop above read from (communicate() would skip it)
    proc.wait(timeout=300)
    err_file.seek(0)
    err = err_file.read()
    err_file.close()
    assert proc.returncode == 3, err[-3000:]
    events += events_of(rest)
    root = studio_home / "runs" / run_id
    [checkpoint] = (root / "checkpoints" / "s").glob("checkpoint-*")
    stopped_at = int(checkpoint.name.split("-")[1])
    assert (checkpoint / "complete").exists()
    # the damage a kill -9 or a full disk leaves: a torn last event and a newer checkpoint never finished
    with open(root / "events.jsonl", "a", encoding="utf-8") as f:
        f.write('{"v": 1, "type": "metric", "run_id": "' + run_id + '", "seq": 99, "data": {"st')
    partial = root / "checkpoints" / "s" / f"checkpoint-{stopped_at + 50}"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00" * 100)
    (root / "spec.yaml").write_text((root / "spec.yaml").read_text().replace("max_steps: 400",
                                                                              f"max_steps: {stopped_at + 2}"))
    result = engine(studio_home, "run", "--resume", run_id)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = events_of(result.stdout)
    assert resumed[0]["type"] == "hello" and resumed[0]["seq"] == events[-1]["seq"] + 1
    steps = [e["data"]["step"] for e in resumed if e["type"] == "metric" and "train/loss" in e["data"]["values"]]
    assert steps and min(steps) > stopped_at  # from the complete checkpoint, not the broken one, not step 0
    mirror = [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()]
    assert mirror == events + resumed  # the torn line is gone and did not swallow the resumed hello
    assert (root / "models" / "s" / "config.json").exists()
    assert json.loads((root / "run.json").read_text())["status"] == "finished"
