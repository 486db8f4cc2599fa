"""Every JSON reader of the project fed the texts that parse but do not fit (issue #19, item 4): a 5,000-digit
integer (Python's int-from-text limit raises a bare ValueError), 50,000-deep nesting (RecursionError), NaN and
Infinity, 1e999 (overflows to inf) and bytes that are not UTF-8. Each reader treats them as bad input: a sentence
or a skipped line, never an exception its caller did not expect; and the run's cancel listener obeys the next
``cancel`` after any of them."""
from __future__ import annotations

import io
import json
import sys
import threading

import pytest

from engine.contract.data.readers import iter_rows
from engine.contract.data.records import RecordProblem, parse_tests
from engine.contract.errors import ProtocolError, SpecError, StoreError
from engine.contract.protocol import Event, EventWriter, parse_command, read_events
from engine.contract.runs import RunStore
from engine.contract.safe_json import JSONProblem, safe_json_loads
from engine.contract.spec import load_spec

HUGE = "1" + "0" * 5000
DEEP = "[" * 50_000 + "]" * 50_000
HOSTILE = {  # name → a JSON value's text (each goes where a number or a list would)
    "huge-int": HUGE,
    "deep": DEEP,
    "nan": "NaN",
    "infinity": "-Infinity",
    "overflow": "1e999",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_safe_json_loads_refuses_with_a_reason(name):
    with pytest.raises(JSONProblem) as info:
        safe_json_loads('{"a": %s}' % HOSTILE[name])
    assert len(str(info.value)) < 200 and ("cannot be read" in str(info.value) or "nested too deeply" in
                                           str(info.value))


def test_safe_json_loads_refuses_bytes_that_are_not_utf8_and_deep_but_parseable_nesting():
    with pytest.raises(JSONProblem, match="not UTF-8 text .byte 7"):
        safe_json_loads(b'{"a": "\xff\xfe"}')
    with pytest.raises(JSONProblem, match="nested too deeply"):
        safe_json_loads("[" * 500 + "]" * 500)  # the decoder copes; the recursive readers after it would not
    assert safe_json_loads('{"a": [1, 2.5, null, "x"]}') == {"a": [1, 2.5, None, "x"]}
    with pytest.raises(JSONProblem, match="'a' is given twice"):
        safe_json_loads('{"a": 1, "a": 2}', unique_keys=True)


@pytest.mark.parametrize("name", ["huge-int", "deep"])  # NaN, inf: the field check names the field
def test_commands_of_a_run_and_of_the_chat_service(name):
    with pytest.raises(ProtocolError) as info:
        parse_command('{"type": "generate", "max_new_tokens": %s}' % HOSTILE[name])
    assert str(info.value).startswith("command ")
    with pytest.raises(ProtocolError, match="not UTF-8"):
        parse_command(b'{"type": "cancel", "x": "\xff"}\n')


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_event_lines(name, tmp_path):
    bad = '{"v": 1, "type": "log", "run_id": "r", "seq": 2, "time": 1.0, "data": {"x": %s}}' % HOSTILE[name]
    with pytest.raises(ProtocolError):
        Event.from_json(bad)
    path = tmp_path / "events.jsonl"
    writer = EventWriter("r", io.StringIO(), mirror=path)
    writer.log("one")
    with open(path, "a", encoding="utf-8") as f:
        f.write(bad + "\n")
    writer.log("three")
    writer.close()
    assert [e.data["message"] for _, e in read_events(path)] == ["one", "three"]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_data_files_jsonl_and_json_list(name, tmp_path):
    good = '{"instruction": "a", "response": "b"}'
    bad = '{"instruction": "a", "response": "b", "n": %s}' % HOSTILE[name]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(f"{good}\n{bad}\n{good}\n")
    rows = list(iter_rows(jsonl))
    assert [isinstance(r, RecordProblem) for _, r in rows] == [False, True, False]
    assert rows[1][0] == f"{jsonl}:2" and len(str(rows[1][1])) < 300
    listed = tmp_path / "d.json"
    listed.write_text(f"[{good},\n{bad}]")
    rows = list(iter_rows(listed))
    assert isinstance(rows[-1][1], RecordProblem) and rows[-1][0] == f"{listed}:2"


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_the_tests_column_of_code_tasks(name):
    with pytest.raises(RecordProblem, match="^tests "):
        parse_tests('[{"input": "1", "output": %s}]' % HOSTILE[name])


def test_the_code_reward_scores_unreadable_tests_as_not_applicable():
    from engine.rewards.functions import make_code_tests

    reward = make_code_tests()
    assert reward(["p"], ["print(1)"], tests=['[{"input": "", "output": %s}]' % HUGE]) == [None]
    assert reward(["p"], ["print(1)"], tests=[DEEP]) == [None]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_spec_json(name, tmp_path):
    spec = tmp_path / "s.json"
    spec.write_text('{"name": "x", "seed": %s, "stages": []}' % HOSTILE[name])
    with pytest.raises(SpecError):
        load_spec(spec)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_run_json_and_the_index(name, tmp_path):
    store = RunStore(tmp_path)
    paths = store.create("r", "name: r\n")
    info = json.loads(paths.info.read_text())
    paths.info.write_text(json.dumps(info)[:-1] + ', "extra": %s}' % HOSTILE[name])
    _later(paths.info)  # changed after it was indexed: the index no longer answers for it
    with pytest.raises(StoreError, match=f"run {paths.id} is damaged: its run.json cannot be read"):
        store.get(paths.id)
    assert [r.status for r in store.list()] == ["damaged"]
    # the index row's scores hold the hostile text: the row is not trusted, run.json answers
    paths.info.write_text(json.dumps(info))
    _later(paths.info, 20)
    store.list()
    import sqlite3

    with sqlite3.connect(store.index_path) as db:
        db.execute("UPDATE runs SET scores = ?", ('{"a": %s}' % HOSTILE[name],))
    db.close()
    assert [(r.status, r.scores) for r in store.list()] == [("created", {})]


def _later(path, seconds: float = 10) -> None:
    import os
    import time

    os.utime(path, (time.time() + seconds, time.time() + seconds))


def test_teacher_targets_metadata(tmp_path):
    from engine.core.context import EngineError
    from engine.training.teacher_targets import open_targets

    (tmp_path / "meta.json").write_text('{"key": %s}' % HUGE)
    with pytest.raises(EngineError, match="is not a teacher-targets cache"):
        open_targets(tmp_path, {})


def test_the_cancel_listener_obeys_a_cancel_after_every_bad_line(monkeypatch):
    from engine.cli import common

    lines = [b'{"type": "cancel", "n": ' + HUGE.encode() + b"}\n", DEEP.encode() + b"\n",
             b'{"type": "cancel", "x": "\xff\xfe"}\n', b"\xff\xfe not utf-8\n", b'{"type": "cancel"\n',
             b"[1, 2]\n", b'{"type": "frobnicate"}\n', b'{"type": "cancel"}\n']
    for prefix in range(len(lines) - 1):  # no bad line alone cancels
        cancel = _listen(monkeypatch, common, lines[:prefix + 1])
        assert not cancel.wait(0.2), lines[prefix][:40]
    assert _listen(monkeypatch, common, lines).wait(10)


def _listen(monkeypatch, common, lines: list[bytes]) -> threading.Event:
    stdin = io.TextIOWrapper(io.BytesIO(b"".join(lines)), encoding="utf-8")  # strict, as in a UTF-8 locale
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(common.signal, "signal", lambda *args: None)  # leave pytest's Ctrl-C alone
    cancel = threading.Event()
    common.listen_for_cancel(cancel)
    return cancel


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_json_files_read_by_the_studio_and_the_model_helpers(name, tmp_path):
    """The studio's readers of run files, settings and model configs all go through load_json_file."""
    import os

    from engine.contract.safe_json import load_json_file
    from studio.model.app_settings import StudioSettings, load_settings

    path = tmp_path / "settings.json"
    path.write_text('{"a": %s}' % HOSTILE[name])
    with pytest.raises(JSONProblem):
        load_json_file(path)
    assert load_settings(path) == StudioSettings()  # falls back to the defaults, with a warning
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        load_json_file(fifo)  # O_NONBLOCK: refused at once, never waited on
    assert load_settings(fifo) == StudioSettings()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_the_arenas_prompt_presets_skip_what_is_not_data(name, tmp_path):
    import os

    from engine.contract.spec import DataSpec
    from studio.arena.prompt_presets import _from_spec_data as presets_from_data

    listed = tmp_path / "d.json"
    listed.write_text('[{"instruction": "a", "response": %s}]' % HOSTILE[name])
    assert presets_from_data(DataSpec(preset="local", path=str(listed))) == []
    lines = tmp_path / "d.jsonl"
    lines.write_text('{"instruction": "x", "n": %s}\n{"instruction": "kept"}\n' % HOSTILE[name])
    assert [p.prompt for p in presets_from_data(DataSpec(preset="local", path=str(lines)))] == ["kept"]
    os.mkfifo(tmp_path / "f.jsonl")
    assert presets_from_data(DataSpec(preset="local", path=str(tmp_path / "f.jsonl"))) == []
