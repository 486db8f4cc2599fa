"""A second hostile suite for issue 14, on the commands the run-store suite (test_cli_run_store_refusals.py) does
not cover: flags, model sources, data files, export, preflight and the chat service, driven through the real CLI.
Every case ends in exit 2 (or the code its command documents) with one sentence on stderr, an ``error`` event when the
command speaks the protocol, no traceback anywhere, no run folder for a refused run, and nothing written outside
the data folder. Flag checks run before torch is imported, so most cases here take well under a second."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import engine, events_of

ROOT = Path(__file__).resolve().parents[2]
TRAIN = "stages:\n  - {kind: sft, name: s, model: student, train: {max_steps: 1}}\n"


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "hömé dir"  # unicode and a space: every path below is quoted nowhere
    path.mkdir()
    return path


def _tree(root: Path, but: Path | None = None) -> set[str]:
    """Every path under ``root``, except those inside ``but`` (the data folder, which commands may use)."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if but is None or but not in (p, *p.parents)}


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory) -> dict:
    """An environment in which importing torch fails: a case that passes in it was refused before torch."""
    shadow = tmp_path_factory.mktemp("no-torch")
    (shadow / "torch").mkdir()
    (shadow / "torch" / "__init__.py").write_text("raise ImportError('torch imported before the refusal')\n")
    return {"PYTHONPATH": os.pathsep.join([str(shadow), str(ROOT)])}


def _engine(home: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMPRESSION_STUDIO_HOME": str(home), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, env=env,
                          timeout=300, stdin=subprocess.DEVNULL, check=False)


def _refused(result: subprocess.CompletedProcess, sentence: str, code: int = 2, protocol: bool = True) -> None:
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert sentence in result.stderr, result.stderr[-2000:]
    events = events_of(result.stdout)
    if protocol:
        assert events and events[-1]["type"] == "error" and sentence in events[-1]["data"]["message"], events


# ---- flags: checked before torch is imported ---------------------------------------------------------------

def test_bad_flags_are_one_sentence_each_before_torch_loads(tmp_path, home, no_torch):
    spec = tmp_path / "ok.yaml"
    spec.write_text("name: x\n" + TRAIN)
    outfile = tmp_path / "out-file"
    outfile.write_text("keep")
    cases = [
        (["eval", "--model", "a=demo:student", "--model", "a=demo:teacher"], "--model a=… is given twice"),
        (["eval", "--model", "a b/../c=demo:student"], "display name 'a b/../c' must start with"),
        (["eval", "--model", "a=demo:student", "--max-new-tokens", "99999999999"], "is too large"),
        (["eval", "--model", "a=demo:student", "--test-fraction", "nan"], "must be a finite number"),
        (["preflight", str(spec), "--memory-gb", "nan"], "--memory-gb must be a number of GB above 0"),
        (["preflight", str(spec), "--memory-gb", "inf"], "--memory-gb must be a number of GB above 0"),
        (["preflight", str(spec), "--memory-gb", "1e300", "--device", "cuda"], "at most 1e6"),
        (["preflight", str(spec), "--memory-gb", "-1"], "--memory-gb must be a number of GB above 0"),
        (["export", "x", "--out", str(outfile)], "is a file; give a folder"),
        (["export", "x", "--name", "../../escape", "--out", str(tmp_path / "o")], "must be a plain file name stem"),
        (["export", str(tmp_path), "--format", ",", "--out", str(tmp_path / "o")], "no GGUF format given"),
        (["export", str(tmp_path), "--format", "q2_zz", "--out", str(tmp_path / "o")], "'q2_zz' is not one of"),
        (["export", "../..:s", "--out", str(tmp_path / "o")], "is not a run id"),
        (["run", str(spec), "--resume", "20260101-000000-x-abcd"], "give either a spec file or --resume"),
    ]
    before = _tree(tmp_path, but=home)
    for args, sentence in cases:
        _refused(_engine(home, *args, env=no_torch), sentence, protocol=args[0] != "preflight")
    assert _tree(tmp_path, but=home) == before and outfile.read_text() == "keep"
    assert not (home / "runs").exists() or not list((home / "runs").iterdir())


def test_chat_flags_are_refused_before_anything_loads(home, no_torch):
    for args, sentence in ((["--model", "x"], "--model expects NAME=SOURCE"),
                           (["--model", "a=demo:student", "--model", "a=demo:teacher"], "given twice")):
        result = _engine(home, "chat", *args, env=no_torch)
        _refused(result, sentence, protocol=False)
        assert "error:" in result.stderr and result.stdout == ""


# ---- model sources: a damaged folder never becomes a run --------------------------------------------------

def test_a_damaged_model_folder_is_refused_before_a_run_exists(tmp_path, studio_home):
    """One real ``quantize`` per class would cost a torch import each; the classes themselves are covered in
    process (tests/engine/test_entry_point_refusals.py), this checks that the CLI refuses before creating a run."""
    folder = tmp_path / "damaged model"
    folder.mkdir()
    (folder / "config.json").write_text("null")
    (folder / "tokenizer.json").write_text("{}")
    runs = studio_home / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    _refused(engine(studio_home, "quantize", str(folder)), "cannot read the config of")
    assert (set(runs.iterdir()) if runs.exists() else set()) == before


# ---- data: a bad file is named with its line, before a run exists -----------------------------------------

def test_a_bad_data_line_is_named_and_no_run_is_created(tmp_path, studio_home):
    data = tmp_path / "dätä.jsonl"
    rows = [json.dumps({"instruction": f"q{i}", "response": f"a{i}"}) for i in range(12)]
    rows[6] = '{"instruction": "q6", "response": '
    data.write_text("\n".join(rows) + "\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: bad-line\ndata: {{preset: local, path: '{data}'}}\n" + TRAIN)
    runs = studio_home / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    _refused(engine(studio_home, "run", str(spec)), f"{data}:7: not valid JSON")
    assert (set(runs.iterdir()) if runs.exists() else set()) == before


# ---- the chat service: hostile stdin, a closed stdin, Ctrl-C ----------------------------------------------

def _chat_env(home: Path) -> dict:
    # strict decoding, as in a UTF-8 locale: one bad byte must not end the service's reader
    return {**os.environ, "COMPRESSION_STUDIO_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8:strict"}


def test_the_chat_service_survives_hostile_bytes_and_ends_on_eof(home):
    lines = [b"not json\n", b"\xff\xfe not utf-8\n", b"[" * 200_000 + b"\n", b'{"type": "frobnicate"}\n',
             b'{"type": "load", "model": "bad", "source": "/no/such/model"}\n',
             b'{"type": "score", "id": "last", "prediction": "a", "reference": "a"}\n']
    result = subprocess.run([sys.executable, "-m", "engine", "chat"], input=b"".join(lines), capture_output=True,
                            env=_chat_env(home), timeout=300, check=False)
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr[-3000:]
    events = events_of(result.stdout.decode())
    errors = " | ".join(e["data"]["message"] for e in events if e["type"] == "error")
    assert errors.count("command is not") == 2, errors  # the undecodable line is one bad command
    for sentence in ("nested too deeply", "unknown command type 'frobnicate'", "/no/such/model does not exist"):
        assert sentence in errors, errors
    assert any(e["type"] == "score" and e["data"]["id"] == "last" for e in events)  # still serving after all that
    assert events[-1]["type"] == "status" and events[-1]["data"]["state"] == "finished"
    assert not (home / "runs").exists()


def test_the_chat_service_ends_cleanly_without_stdin_and_on_ctrl_c(home):
    closed = subprocess.run([sys.executable, "-m", "engine", "chat"], capture_output=True, env=_chat_env(home),
                            timeout=300, stdin=None, preexec_fn=lambda: os.close(0), check=False)
    assert closed.returncode == 0 and b"Traceback" not in closed.stderr, closed.stderr[-3000:]
    assert events_of(closed.stdout.decode())[-1]["data"]["state"] == "finished"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "chat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_chat_env(home))
    try:
        proc.stdin.write(b'{"type": "score", "id": "a", "prediction": "x", "reference": "x"}\n')
        proc.stdin.flush()
        while b'"score"' not in proc.stdout.readline():  # serving: the dispatcher waits on its inbox
            pass
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and b"Traceback" not in err, err[-3000:]


# ---- closed standard streams: the caller ran us with >&- or 2>&- -------------------------------------------

def test_closed_stdout_or_stderr_still_ends_in_the_sentence_where_it_can_be_read(tmp_path, home, no_torch):
    env = {**os.environ, "COMPRESSION_STUDIO_HOME": str(home), **no_torch}
    args = [sys.executable, "-m", "engine", "export", str(tmp_path / "none"), "--out", str(tmp_path / "o")]
    no_stdout = subprocess.run(args, capture_output=False, stdout=None, stderr=subprocess.PIPE, env=env,
                               timeout=120, stdin=subprocess.DEVNULL, preexec_fn=lambda: os.close(1), check=False)
    assert no_stdout.returncode == 2 and b"Traceback" not in no_stdout.stderr, no_stdout.stderr[-2000:]
    assert b"error: " in no_stdout.stderr and b"it has no config.json" in no_stdout.stderr
    no_stderr = subprocess.run(args, stdout=subprocess.PIPE, env=env, timeout=120, stdin=subprocess.DEVNULL,
                               preexec_fn=lambda: os.close(2), check=False)
    assert no_stderr.returncode == 2, no_stderr
    assert "it has no config.json" in events_of(no_stderr.stdout.decode())[-1]["data"]["message"]
    assert not (tmp_path / "o").exists()


def test_a_reader_that_leaves_early_ends_the_listing_quietly(home, no_torch):
    """`compression-engine runs | head -1`: no 'Broken pipe; check the disk' sentence, the shell's 141."""
    from engine.contract.runs import RunStore

    RunStore(home).create("x", "name: x\n")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        result = subprocess.run([sys.executable, "-m", "engine", "runs"], stdout=write, stderr=subprocess.PIPE,
                                env={**os.environ, "COMPRESSION_STUDIO_HOME": str(home), **no_torch}, timeout=120,
                                stdin=subprocess.DEVNULL, check=False)
    finally:
        os.close(write)
    assert result.returncode == 141 and result.stderr == b"", result.stderr
