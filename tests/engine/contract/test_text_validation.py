"""Text that validation must not let through (issue #19, item 6): a lone surrogate ("\\ud800", valid JSON and a
valid Python string, but no tokenizer or file takes it) is refused at the data check and the chat request check
with a sentence naming the file, line and field; a huge value echoed in an error sentence is cut (one helper,
``engine.contract.errors.echo``/``shorten``, and a last guard on every error line); JSON specs refuse duplicate
keys as YAML ones do."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.contract.data.preview import preview_file
from engine.contract.errors import echo, shorten
from engine.contract.protocol import Event, EventWriter
from engine.contract.spec import DataSpec, SpecError, load_spec
from engine.core.context import EngineError
from engine.training_data.loading import load_records

REPO = Path(__file__).resolve().parents[3]
LONE = "\ud800"
GOOD = {"instruction": "a", "response": "b"}

ROWS = {  # where a lone surrogate can hide in a data row → the field the sentence names
    "response": ({**GOOD, "response": f"ok {LONE}"}, "response holds a character that is not text"),
    "instruction": ({**GOOD, "instruction": LONE}, "instruction holds a character that is not text"),
    "context": ({**GOOD, "context": LONE}, "context holds a character"),
    "category": ({**GOOD, "category": LONE}, "category holds a character"),
    "test-input": ({**GOOD, "tests": [{"input": LONE, "output": "1"}]}, "tests[0].input holds a character"),
    "chat-turn": ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": LONE}]},
                  "messages[1] content holds a character"),
    "chat-parts": ({"messages": [{"role": "user", "content": [{"type": "text", "text": LONE}]},
                                 {"role": "assistant", "content": "x"}]}, "messages[0] content holds a character"),
    "sharegpt": ({"conversations": [{"from": "human", "value": LONE}, {"from": "gpt", "value": "x"}]},
                 "conversations[0] content holds a character"),
}


@pytest.mark.parametrize("case", sorted(ROWS))
def test_a_lone_surrogate_in_data_is_refused_at_the_data_check_naming_file_line_and_field(tmp_path, case):
    row, words = ROWS[case]
    path = tmp_path / "d.jsonl"
    # json.dumps writes the surrogate as the \ud800 escape, exactly as a careless exporter would
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(EngineError) as info:
        load_records(DataSpec(preset="local", path=str(path)))
    message = str(info.value)
    assert message.startswith(f"{path}:2: ") and words in message and "'\\ud800'" in message, message
    message.encode("utf-8")  # the sentence itself is printable
    preview = preview_file(path)  # the wizard's preview says the same, row by row
    assert any(words in error for error in preview.errors), preview.errors


def test_the_tokenizer_never_sees_one(tmp_path):
    """Before: load_records accepted the row and SFT failed later with the tokenizer's TypeError."""
    from transformers import AutoTokenizer

    from engine.demo.kit import ensure_demo_kit

    tokenizer = AutoTokenizer.from_pretrained(ensure_demo_kit().student_dir)
    with pytest.raises(TypeError):
        tokenizer(f"ok {LONE}")  # what the data check now stands in front of


CHAT = [
    ({"type": "generate", "request_id": "r", "model": "s", "messages": [{"role": "user", "content": LONE}]},
     "messages[0].content holds a character that is not text"),
    ({"type": "generate", "request_id": LONE, "model": "s", "messages": [{"role": "user", "content": "x"}]},
     "generate needs 'request_id': a non-empty string of text"),
]


@pytest.mark.parametrize(("command", "words"), CHAT)
def test_a_lone_surrogate_in_a_chat_request_is_refused_before_any_work(command, words):
    from engine.chat.requests import check_messages, text_field
    from engine.contract.protocol import parse_command

    parsed = parse_command(json.dumps(command))  # arrives as the \ud800 escape
    with pytest.raises(EngineError, match=words.replace("[", r"\[").replace("]", r"\]")):
        text_field(parsed, "request_id", "generate")
        check_messages(parsed["messages"])


def test_events_that_echo_a_surrogate_stay_valid_utf8_lines(tmp_path):
    out = io.StringIO()
    writer = EventWriter("r", out, mirror=tmp_path / "events.jsonl")
    writer.log(f"echoing {LONE}")
    writer.close()
    line = out.getvalue().strip()
    line.encode("utf-8")
    assert Event.from_json(line).data["message"] == f"echoing {LONE}"
    assert (tmp_path / "events.jsonl").read_bytes().decode("utf-8").strip() == line


def test_shorten_and_echo_cut_huge_values():
    assert len(shorten("x" * 10_000)) <= 80 and "[10,000 chars]" in shorten("x" * 10_000)
    assert len(echo(["y" * 5000])) <= 60 and echo("ab") == "'ab'"
    assert echo(10 ** 5000) == "<a 5,001-digit number>"
    assert shorten(LONE) == "\\ud800"


LONG = "n" * 10_000
SPECS = {  # a 10,000-character value in every place a spec error echoes one
    "stage-name": {"name": "x", "stages": [{"kind": "sft", "name": LONG}]},
    "stage-name-and-bad-field": {"name": "x", "stages": [{"kind": "sft", "name": LONG, "train": {"max_steps": -1}}]},
    "reference": {"name": "x", "stages": [{"kind": "sft", "name": "s", "model": LONG}]},
    "kind": {"name": "x", "stages": [{"kind": LONG}]},
    "run-name": {"name": LONG, "stages": []},
    "unknown-key": {"name": "x", LONG: 1, "stages": []},
    "preset": {"name": "x", "data": {"preset": LONG}, "stages": []},
    "report-to": {"name": "x", "report_to": [LONG], "stages": []},
}


@pytest.mark.parametrize("case", sorted(SPECS))
def test_a_10000_character_value_is_cut_in_the_error_sentence(tmp_path, case):
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(SPECS[case]))
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert len(str(info.value)) < 400, str(info.value)[:600]


def test_the_cli_error_line_is_cut_whatever_the_sentence(tmp_path):
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(SPECS["stage-name"]))
    done = subprocess.run([sys.executable, "-m", "engine", "run", str(spec)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                               "COMPRESSION_STUDIO_HOME": str(tmp_path / "home")},
                          timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and len(done.stderr) < 400, done.stderr[:600]
    [event] = [json.loads(line) for line in done.stdout.splitlines()]
    assert event["type"] == "error" and len(event["data"]["message"]) < 400
    writer_out = io.StringIO()
    EventWriter(stream=writer_out).error("x" * 50_000 + " — do this.")  # the last guard keeps the advice
    message = json.loads(writer_out.getvalue())["data"]["message"]
    assert len(message) <= 1000 and message.endswith("do this.")


@pytest.mark.parametrize(("suffix", "text"), [
    (".json", '{"name": "x", "seed": 1, "seed": 2, "stages": []}'),
    (".json", '{"name": "x", "stages": [{"kind": "sft", "name": "a", "name": "b"}]}'),
    (".yaml", "name: x\nseed: 1\nseed: 2\nstages: []\n"),
])
def test_duplicate_keys_are_refused_in_json_and_yaml_specs(tmp_path, suffix, text):
    spec = tmp_path / f"s{suffix}"
    spec.write_text(text)
    with pytest.raises(SpecError, match="is given twice"):
        load_spec(spec)


@pytest.mark.parametrize("command", [
    {"type": "load", "model": "m", "source": LONE},
    {"type": "score", "id": "s", "prediction": LONE, "reference": "x"},
    {"type": "unload", "model": LONE},
])
def test_every_text_field_of_a_chat_command_refuses_a_lone_surrogate(command):
    from engine.chat.requests import check_fields

    with pytest.raises(EngineError, match="must be text"):
        check_fields(command)


@pytest.mark.parametrize(("suffix", "text", "where"), [
    (".json", '{"name": "x\\ud800", "stages": []}', "name"),
    (".json", '{"name": "x", "data": {"preset": "local", "path": "/d\\udfff.jsonl"}, "stages": []}', "data.path"),
    (".json", '{"name": "x", "stages": [], "data": {"columns": {"\\ud800": "a"}}}', "data.columns"),
    (".yaml", 'name: "x\\ud800"\nstages: []\n', "name"),
])
def test_a_lone_surrogate_in_a_spec_is_refused_naming_the_setting(tmp_path, suffix, text, where):
    """Before: accepted, and the run's name then broke the run index (SQLite cannot store it)."""
    spec = tmp_path / f"s{suffix}"
    spec.write_text(text)
    with pytest.raises(SpecError, match=f"{where}: holds a character that is not text"):
        load_spec(spec)
