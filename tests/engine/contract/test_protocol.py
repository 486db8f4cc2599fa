"""The JSON-lines protocol: envelope fields, sequence numbers, the events.jsonl mirror, replay and commands."""
from __future__ import annotations

import io
import json
import os

import pytest

from engine.contract.protocol import (Event, EventWriter, ProtocolError, command_line, parse_command, read_events)


def test_events_carry_the_envelope_and_are_mirrored(tmp_path):
    out = io.StringIO()
    writer = EventWriter("run-1", out, mirror=tmp_path / "events.jsonl")
    writer.emit("hello", pid=1)
    writer.metric("sft", 3, {"train/loss": 1.5, "train/lr": float("nan")})
    writer.progress("sft", 3, 12, elapsed_s=6.0)
    writer.close()
    lines = out.getvalue().splitlines()
    assert lines == (tmp_path / "events.jsonl").read_text().splitlines()
    objs = [json.loads(line) for line in lines]
    assert [o["seq"] for o in objs] == [1, 2, 3]
    assert all(o["v"] == 1 and o["run_id"] == "run-1" and o["time"] > 0 for o in objs)
    assert objs[1]["data"]["values"] == {"train/loss": 1.5, "train/lr": None}  # NaN is not JSON
    assert objs[2]["data"]["eta_s"] == pytest.approx(18.0)  # 3 steps took 6 s; 9 remain
    assert objs[2]["data"]["fraction"] == pytest.approx(0.25)


def test_replay_resumes_from_an_offset_and_skips_a_partial_line(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = EventWriter("r", io.StringIO(), mirror=path)
    for step in range(3):
        writer.metric("s", step, {"train/loss": float(step)})
    writer.close()
    with open(path, "a") as f:
        f.write('{"v": 1, "type": "metric"')  # a writer caught mid-line
    first = list(read_events(path))
    assert [e.data["step"] for _, e in first] == [0, 1, 2]
    assert list(read_events(path, first[1][0]))[0][1].data["step"] == 2


def test_commands_parse_and_bad_lines_say_why():
    assert parse_command(command_line("cancel")) == {"type": "cancel"}
    with pytest.raises(ProtocolError, match="command is not valid JSON"):
        parse_command("{cancel")
    with pytest.raises(ProtocolError, match="unknown command"):
        parse_command('{"type": "explode"}')
    with pytest.raises(ProtocolError):
        Event.from_json('{"type": "nonsense"}')
    with pytest.raises(ProtocolError):
        EventWriter().emit("nonsense")


def test_a_closed_pipe_diverts_the_stream_to_its_fallback_file(tmp_path):
    import os

    from engine.contract.protocol import SurvivingStream

    read_end, write_end = os.pipe()
    stream = SurvivingStream(os.fdopen(write_end, "w", buffering=1), fallback=tmp_path / "engine.log")
    stream.write("seen by the reader\n")
    assert os.read(read_end, 100) == b"seen by the reader\n"
    os.close(read_end)  # the studio went away
    stream.write("after the reader left\n")  # EPIPE: diverted, not raised
    stream.write("and later\n")
    stream.flush()
    assert stream.diverted
    assert (tmp_path / "engine.log").read_text() == "after the reader left\nand later\n"


CLOSED_PIPE_SCRIPT = """
import logging, os, sys, time
from engine.contract.protocol import EventWriter, claim_stdout, divert_stderr_to
claim_stdout()
logging.basicConfig(stream=sys.stderr, level=logging.INFO)
divert_stderr_to(sys.argv[1] + "/engine.log")
events = EventWriter("r", mirror=sys.argv[1] + "/events.jsonl")
events.log("first")
sys.stdin.readline()  # the parent closes its ends of the pipes, then this line's EOF arrives
deadline = time.time() + 10
while not sys.stderr.diverted and time.time() < deadline:  # the hang-up watcher, before any write
    time.sleep(0.01)
os.write(2, b"a C library's line\\n")  # straight to the descriptor, as C and Rust code write
os.write(1, b"and one to fd 1\\n")
for i in range(50):
    events.metric("sft", i, {"train/loss": 1.0})
    logging.info("step %d", i)
    print("a library's print", i)  # stdout is stderr now
events.emit("done", status="finished", summary={})
"""


def test_the_engine_outlives_a_reader_that_closed_its_pipes(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    proc = subprocess.Popen([sys.executable, "-c", CLOSED_PIPE_SCRIPT, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert b'"first"' in proc.stdout.readline()
    proc.stdout.close()
    proc.stderr.close()
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0  # no BrokenPipeError, no exit code 120 from the final flush
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "done" and sum(e["type"] == "metric" for e in events) == 50
    log = (tmp_path / "engine.log").read_text()
    assert "step 49" in log and "a library's print 49" in log
    assert "a C library's line" in log and "and one to fd 1" in log  # diverted before anyone wrote


def test_event_payloads_are_closed_under_the_suites_strict_check(monkeypatch):
    """tests/conftest.py turns the check on for every writer: an undeclared key is refused by name, declared
    optional ones (the evaluation's model and reference) pass."""
    from engine.contract.events import STRICT_ENV, payload_problems

    assert os.environ.get(STRICT_ENV) == "1"
    writer = EventWriter("r", io.StringIO())
    writer.emit("sample", stage="eval", step=0, prompt="p", completion="c", model="kd", reference="r", rewards={})
    writer.emit("metric", stage="eval", step=0, model="kd", values={"eval/rougeL": 0.5})
    with pytest.raises(ProtocolError, match="undeclared colour"):
        writer.emit("metric", stage="s", step=1, values={}, colour="red")
    assert "lacks prompt" in payload_problems("sample", {"stage": "s", "step": 0, "completion": "c"})
    monkeypatch.delenv(STRICT_ENV)
    writer.emit("metric", stage="s", step=1, values={}, colour="red")  # outside the tests: written as it is
