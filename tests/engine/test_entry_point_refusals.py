"""Hostile input to the engine's own entry points, in process (fast): data files, model folders and chat-service
commands. Each case must end in one sentence naming the file (and line or field) and what to do, never in a
Python error of another kind. The CLI side of the same classes is in tests/integration/test_cli_input_refusals.py."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from engine.core.context import EngineError
from engine.contract.spec import DataSpec, RunSpec, SpecError, build

sys.path.insert(0, str(Path(__file__).parent))  # quant_helpers, as the other engine tests import it

GOOD = [{"instruction": f"question {i}", "response": f"answer {i}"} for i in range(12)]


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _records(path, **data):
    from engine.training_data.loading import load_records

    return load_records(DataSpec(preset="local", path=str(path), **data))


# ---- data files: which file, which line or field, what to do ---------------------------------------------

_BAD_LINE_7 = _jsonl(GOOD[:6]) + '{"instruction": "x", "response": \n' + _jsonl(GOOD[6:])


@pytest.mark.parametrize("name, content, columns, sentence", [
    ("bad7.jsonl", _BAD_LINE_7, {}, "bad7.jsonl:7: not valid JSON"),
    ("wrapped.json", '{\n  "data": ' + json.dumps(GOOD, indent=1) + "\n}\n", {},
     "holds one JSON object, not rows (its rows may be the list under 'data'"),
    ("scalar.json", "42\n", {}, "must hold a list of objects"),
    ("lists.json", '[["a", "b"], ["c", "d"]]', {}, "lists.json:1: expected an object with named fields, got a list"),
    ("lists.jsonl", '["a", "b"]\n', {}, "lists.jsonl:1: expected an object with named fields, got a list"),
    ("ragged.csv", "instruction,response\na,b\nc,d,e\n", {}, "ragged.csv:3: has 3 cells but the header has 2"),
    ("header.csv", "instruction,response\n", {}, "header.csv holds no usable records"),
    ("twice.csv", "instruction,instruction,response\na,b,c\n", {},
     "twice.csv:1: the header names column 'instruction' more than once"),
    ("empty.csv", "", {}, "empty.csv holds no usable records"),
    ("corrupt.parquet", b"PAR1" + b"\x00garbage" * 8 + b"PAR1", {}, "not a readable Parquet file"),
    ("text.parquet", "hello", {}, "not a readable Parquet file"),
    ("data.txt", _jsonl(GOOD), {}, "unknown file type '.txt'"),
    ("mapped.jsonl", _jsonl(GOOD), {"instruction": "question"}, "mapped.jsonl:1: no column question for instruction"),
    ("empty.jsonl", '{"instruction": "x", "response": ""}\n', {}, "empty.jsonl:1: response is empty"),
    ("null.jsonl", '{"instruction": "x", "response": null}\n', {}, "null.jsonl:1: response is empty"),
    ("object.jsonl", '{"instruction": {"a": 1}, "response": "y"}\n', {}, "object.jsonl:1: instruction must be text"),
    ("utf16.jsonl", _jsonl(GOOD).encode("utf-16"), {}, "utf16.jsonl: not UTF-8 text"),
    ("latin1.json", '{"instruction": "caf\xe9"}\n'.encode("latin-1"), {}, "latin1.json: not UTF-8 text"),
    ("deep.jsonl", "[" * 100_000 + "\n", {}, "deep.jsonl:1:"),
    ("digits.jsonl", '{"instruction": "q", "response": "a", "id": 1' + "0" * 5000 + "}\n", {},
     "digits.jsonl:1: cannot be read (Exceeds the limit"),
    ("digits.json", '[{"instruction": "q", "response": "a", "id": 1' + "0" * 5000 + "}]", {},
     "digits.json:1: cannot be read (Exceeds the limit"),
])
def test_a_bad_data_file_names_file_line_and_remedy(tmp_path, name, content, columns, sentence):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(EngineError) as caught:
        _records(path, columns=columns)
    assert sentence in str(caught.value)
    assert str(caught.value).endswith(".")


def test_a_folder_fifo_or_missing_file_as_data_is_a_sentence(tmp_path):
    import os

    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    for path, sentence in ((tmp_path, "is a folder; data.path needs one"),
                           (tmp_path / "missing.jsonl", "no such file; check data.path"),
                           (fifo, "not a regular file; check data.path")):
        with pytest.raises(EngineError, match=sentence):
            _records(path)


def test_a_ten_megabyte_field_and_many_rows_load(tmp_path):
    """Big is not hostile: a 10 MB single field loads (it is truncated to max_length when tokenized)."""
    path = tmp_path / "big.jsonl"
    path.write_text(_jsonl([{"instruction": "x" * 10_000_000, "response": "y"}] + GOOD))
    records = _records(path)
    assert len(records) == 13 and len(records[0]["instruction"]) == 10_000_000


# ---- model folders: config and tokenizer checked before any weight is read --------------------------------

@pytest.mark.parametrize("config, sentence", [
    ("not json", "cannot read the config"),
    ("null", "cannot read the config"),
    ("[1, 2]", "cannot read the config"),
    ('{"model_type": "zebra"}', "cannot read the config"),
    ('{"model_type": 5}', "cannot read the config"),
    ('{"model_type": "llama", "hidden_size": "big"}', "cannot read the config"),
    ('{"model_type": "llama", "num_attention_heads": 0}', "cannot read the config"),
    (b"\xff\xfe\x00binary", "cannot read the config"),
])
def test_a_damaged_config_is_one_sentence_for_every_check(tmp_path, config, sentence):
    from engine.models.inspection import inspect_model
    from engine.models.loading import check_source

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_bytes(config if isinstance(config, bytes) else config.encode())
    (folder / "tokenizer.json").write_text("{}")
    for check in (check_source, inspect_model):
        with pytest.raises(EngineError, match=sentence):
            check(str(folder))


def test_the_memory_plan_refuses_a_config_it_cannot_size_with_a_sentence(tmp_path):
    from engine.models.memory_plan import config_of

    zero_heads = {"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 9,
                  "num_attention_heads": 0}
    for n, config in enumerate(("null", "[1]", '{"model_type": "zebra"}', json.dumps(zero_heads),
                                '{"hidden_size": -5, "num_hidden_layers": 1, "vocab_size": 9}')):
        folder = tmp_path / f"m{n}"
        folder.mkdir()
        (folder / "config.json").write_text(config)
        with pytest.raises(EngineError, match="cannot estimate the memory of"):
            config_of(str(folder))


def test_impossible_sizes_and_odd_fields_are_refused_by_inspect(tmp_path):
    from engine.models.inspection import inspect_model

    for n, config in enumerate(('{"model_type": "llama", "vocab_size": -1}',
                                '{"model_type": "llama", "architectures": 7}')):
        folder = tmp_path / f"m{n}"
        folder.mkdir()
        (folder / "config.json").write_text(config)
        with pytest.raises(EngineError, match="does not describe a model transformers can build"):
            inspect_model(str(folder))


def test_damaged_weights_are_refused_before_a_run_and_a_sentence_when_loading(tmp_path):
    from engine.contract.spec import ModelSpec
    from engine.models.loading import check_source, load_model

    from quant_helpers import make_tiny_model  # tests/engine on the path

    cut, zeros = make_tiny_model(tmp_path / "cut"), make_tiny_model(tmp_path / "zeros")
    weights = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (zeros / "model.safetensors").write_bytes(b"\x00" * 100)
    for folder in (cut, zeros):
        with pytest.raises(EngineError, match="the files are damaged or cut short"):
            check_source(str(folder))
        with pytest.raises(EngineError, match="cannot read the weights of .* damaged or cut short"):
            load_model(ModelSpec(source=str(folder)), "cpu")


def test_sources_that_are_not_model_folders(tmp_path):
    from engine.models.loading import check_source, resolve_source

    plain = tmp_path / "weights.bin"
    plain.write_bytes(b"\x00\x01")
    (tmp_path / "cfgdir" / "config.json").mkdir(parents=True)
    (tmp_path / "notok").mkdir()
    (tmp_path / "notok" / "config.json").write_text('{"model_type": "llama"}')
    cases = {"": "the model source is empty", "  ": "the model source is empty",
             str(plain): "is a file, not a model folder",
             str(tmp_path / "cfgdir"): "it has no config.json",
             str(tmp_path / "notok"): "has no tokenizer",
             "org/na me": "is neither an existing folder", "a/b/c": "is neither an existing folder",
             "org/model\n--x": "is neither an existing folder",
             "x" * 1_000_000: "is 1,000,000 characters long", "/tmp/" + "x" * 300: "File name too long",
             "~no-such-user-here/model": "model folder ~no-such-user-here/model does not exist"}
    for source, sentence in cases.items():
        with pytest.raises(EngineError, match=sentence) as caught:
            check_source(source)
        assert len(str(caught.value)) < 600  # a sentence, never the whole input echoed back
    with pytest.raises(EngineError, match="is a file, not a model folder"):
        resolve_source(str(plain))


def test_display_names_become_file_names_so_they_are_names():
    stage = {"kind": "evaluate", "name": "eval", "models": {"a b/../c": "student"}, "reference": "a b/../c"}
    with pytest.raises(SpecError, match=r"eval.models: display name 'a b/../c' must start with"):
        build(RunSpec, {"name": "x", "stages": [stage]})


# ---- GGUF export arguments ---------------------------------------------------------------------------------

def test_export_arguments_are_checked_before_anything_is_read(tmp_path):
    from engine.export.gguf import check_exportable, check_output

    file = tmp_path / "out"
    file.write_text("x")
    for out in (file, file / "sub" / "dir"):
        with pytest.raises(EngineError, match="is a file; give a folder"):
            check_output(out, "")
    for name in ("../../x", "a/b", ".hidden", "x" * 200):
        with pytest.raises(EngineError, match="must be a plain file name stem"):
            check_output(tmp_path / "o", name)
    check_output(tmp_path / "new", "my-model.v2")
    for formats, sentence in (([], "no GGUF format given"), (["q2_zz"], "'q2_zz' is not one of")):
        with pytest.raises(EngineError, match=sentence):
            check_exportable(tmp_path / "does-not-matter", formats)  # the formats are said before the folder
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("[1]")
    with pytest.raises(EngineError, match="holds list instead of a JSON object"):
        check_exportable(tmp_path / "m", ["q8_0"])
    (tmp_path / "m" / "config.json").write_text('{"architectures": 7, "quantization_config": null}')
    with pytest.raises(EngineError, match="is a unknown model, which this GGUF export cannot convert"):
        check_exportable(tmp_path / "m", ["q8_0"])


# ---- the chat service: every bad command is an error event, and the service goes on ----------------------

def _chat(lines: list[str | bytes]) -> list[dict]:
    from engine.chat.serve import serve
    from engine.contract.protocol import EventWriter

    out = io.StringIO()
    text = "".join(line if isinstance(line, str) else line.decode("utf-8", "replace") for line in lines)
    assert serve(io.StringIO(text), EventWriter(stream=out)) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _gen(request_id: str, sampling=None, messages=None, model: object = "s") -> str:
    return json.dumps({"type": "generate", "request_id": request_id, "model": model,
                       "messages": messages if messages is not None else [{"role": "user", "content": "hi"}],
                       "sampling": sampling if sampling is not None else {}}) + "\n"


CHAT_CASES = [
    ("not json\n", "command is not valid JSON"),
    ("[1, 2]\n", "must be a JSON object"),
    ('{"type": "frobnicate"}\n', "unknown command type 'frobnicate'"),
    ('{"type": ["load"]}\n', "unknown command type"),
    ("[" * 100_000 + "\n", "nested too deeply"),
    (_gen("r0", model="nope"), "model 'nope' is not loaded"),
    (_gen("r1", model=["nope"]), 'generate.model must be text, got ["nope"]'),
    ('{"type": "generate", "request_id": ["x"], "model": "s"}\n', "generate.request_id must be text"),
    ('{"type": "load", "model": ["x"], "source": "demo:student"}\n', "load.model must be text"),
    ('{"type": "load", "model": "x", "source": "demo:student", "load_in_4bit": "no"}\n', "load_in_4bit must be"),
    ('{"type": "stop", "request_id": "zzz"}\n', "no running request 'zzz'"),
    ('{"type": "stop", "request_id": ["zzz"]}\n', "stop.request_id must be text or null"),
    ('{"type": "unload", "model": ["zzz"]}\n', "unload.model must be text"),
    ('{"type": "unload", "model": "zzz"}\n', "model 'zzz' is not loaded"),
    ('{"type": "score", "id": "s1"}\n', "score needs text in both"),
    ('{"type": "score", "id": "s2", "prediction": 5, "reference": "x"}\n', "score.prediction must be text, got 5."),
    (json.dumps({"type": "score", "id": "big", "prediction": "a " * 3000, "reference": "b " * 3000}) + "\n",
     "too long to compare"),
    (_gen("g1", {"temperature": -1, "greedy": False}), "temperature"),
    (_gen("g2", {"max_new_tokens": 99999999999}), "max_new_tokens: 1e+11 is too large"),
    (_gen("g3", {"seed": "abc"}), "sampling.seed must be a whole number"),
    (_gen("g4", {"seed": 10 ** 30}), "sampling.seed must be a whole number"),
    (_gen("g5", {"seed": -5}), "sampling.seed must be a whole number"),
    (_gen("g6", {"max_new_tokens": 2.5}), "max_new_tokens"),
    (_gen("g7", {"top_p": float("nan")}), "top_p"),  # json.dumps writes NaN, as a careless client would
    (_gen("g8", {"max_tokens": 5}), "unknown sampling setting 'max_tokens'"),
    (_gen("g9", [1]), "generate.sampling must be an object or null"),
    (_gen("g10", messages=[]), "generate needs 'messages'"),
    (_gen("g11", messages="hi"), "generate.messages must be a list"),
    (_gen("g12", messages=[{"role": "wizard", "content": "hi"}]), "each message must be an object"),
]


def test_every_bad_chat_command_is_one_error_event_and_the_service_goes_on():
    lines = [line for line, _ in CHAT_CASES] + [
        '{"type": "score", "id": "last", "prediction": "a b", "reference": "a b"}\n']
    events = _chat(lines)
    assert events[-1]["type"] == "status" and events[-1]["data"]["state"] == "finished"
    errors = [e["data"]["message"] for e in events if e["type"] == "error"]
    assert len(errors) == len(CHAT_CASES), errors
    for (line, sentence), message in zip(CHAT_CASES, errors):
        assert sentence in message, (line[:80], message)
        assert "Error:" not in message, message  # a sentence, not a Python exception's name
    assert events[-2]["type"] == "score" and events[-2]["data"]["rougeL"] == 1.0  # still serving


def test_a_stdin_that_breaks_or_is_missing_ends_the_service_cleanly():
    from engine.chat.serve import serve
    from engine.contract.protocol import EventWriter

    class Broken(io.StringIO):
        def __iter__(self):
            yield '{"type": "score", "id": "a", "prediction": "x", "reference": "x"}\n'
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    for stdin in (Broken(), None):
        out = io.StringIO()
        assert serve(stdin, EventWriter(stream=out)) == 0  # ends, instead of waiting for a line forever
        assert json.loads(out.getvalue().splitlines()[-1])["data"]["state"] == "finished"


# ---- GGUF headers: every declared size is checked against the file before gguf-py believes it --------------

def _gguf(*fields: bytes) -> bytes:
    import struct

    return b"GGUF" + struct.pack("<I", 3) + b"".join(fields)


def test_a_gguf_header_that_declares_more_than_the_file_holds_is_refused_in_constant_memory(tmp_path):
    import struct

    from engine.models.gguf_source import header

    key = struct.pack("<Q", 3) + b"abc"
    cases = {  # 40-odd bytes each; the third made gguf-py build a 2**40-element list (killed for memory)
        "counts": _gguf(struct.pack("<QQ", 2 ** 62, 2 ** 62)),
        "string": _gguf(struct.pack("<QQ", 0, 1), key, struct.pack("<I", 8), struct.pack("<Q", 2 ** 60)),
        "array": _gguf(struct.pack("<QQ", 0, 1), key, struct.pack("<IIQ", 9, 0, 2 ** 40)),
        "strings": _gguf(struct.pack("<QQ", 0, 1), key, struct.pack("<IIQ", 9, 8, 2 ** 40)),
        "tensors": _gguf(struct.pack("<QQ", 2 ** 40, 0)),
        "version": b"GGUF" + struct.pack("<IQQ", 99, 0, 0),
        "short": b"GGUF\x03\x00",
        "empty": b"",
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(content)
        with pytest.raises(EngineError, match="is not a readable GGUF file .*damaged or cut short"):
            header(path)


# ---- numbers too long to be numbers, in a spec ---------------------------------------------------------------

@pytest.mark.parametrize("name, text, sentence", [
    ("a.json", '{"name": "x", "processes": 1' + "0" * 5000 + "}", "a number in the spec cannot be read"),
    ("b.yaml", "name: x\nprocesses: 1" + "0" * 5000 + "\n", "a number in the spec cannot be read"),
    ("c.yaml", "name: x\nprocesses: 0x" + "f" * 5000 + "\n", "processes: a 6021-digit number is too large"),
    ("d.yaml", "name: x\nstages: [{kind: sft, name: s, train: {learning_rate: 0b" + "1" * 20000 + "}}]\n",
     "s.train.learning_rate: a 6021-digit number is too large"),
    ("e.yaml", "name: x\nprocesses: 1" + "0" * 400 + "\n", "processes: a 401-digit number is too large"),
])
def test_a_number_too_long_for_python_is_a_sentence(tmp_path, name, text, sentence):
    from engine.contract.spec import load_spec

    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError, match=sentence):
        load_spec(path)
