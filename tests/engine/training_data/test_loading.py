"""engine.training_data loading: local files in every format with column mappings, FILE:LINE errors for malformed rows,
max_samples, hub presets' column mappings on local files shaped like the hub data, and their offline sentence."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.core.context import EngineError
from engine.training_data.loading import load_records
from engine.training_data.loading import offline_message
from engine.contract.data.presets import PRESETS
from engine.contract.data.records import CANONICAL_FIELDS
from engine.contract.spec import DataSpec

sys.path.insert(0, str(Path(__file__).parents[1]))
from data_helpers import write_jsonl

FIXTURE = Path(__file__).parents[1] / "fixtures" / "dolly_en_sample.jsonl"
ROOT = Path(__file__).resolve().parents[3]


def _spec(path: Path, preset: str = "local", **kw) -> DataSpec:
    return DataSpec(preset=preset, path=str(path), **kw)


def test_dolly_fixture_with_dolly_en_mapping():
    assert FIXTURE.exists(), "tests/engine/fixtures/dolly_en_sample.jsonl is missing"
    records = load_records(_spec(FIXTURE, "dolly_en"))
    raw = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(raw) == 20
    assert all(tuple(r) == CANONICAL_FIELDS for r in records)
    assert [r["instruction"] for r in records] == [x["instruction"] for x in raw]
    assert [r["category"] for r in records] == [x["category"] for x in raw]
    assert {r["language"] for r in records} == {"en"}
    assert len({r["id"] for r in records}) == 20


def test_column_mapping_in_every_format(tmp_path):
    rows = [{"q": f"question {i}", "a": f"answer {i}", "kind": "k" + str(i % 2), "lang": "es"} for i in range(5)]
    write_jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "d.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    with open(tmp_path / "d.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    columns = {"instruction": "q", "response": "a", "category": "kind", "language": "lang"}
    results = {ext: load_records(_spec(tmp_path / f"d.{ext}", columns=columns))
               for ext in ("jsonl", "json", "csv", "parquet")}
    for ext, records in results.items():
        assert [r["instruction"] for r in records] == [f"question {i}" for i in range(5)], ext
        assert [r["response"] for r in records] == [f"answer {i}" for i in range(5)], ext
        assert [r["category"] for r in records] == ["k0", "k1", "k0", "k1", "k0"], ext
        assert {r["language"] for r in records} == {"es"}, ext
    assert results["jsonl"] == results["csv"] == results["parquet"] == results["json"]


def test_max_samples_and_tests_column(tmp_path):
    rows = [{"instruction": f"i{i}", "response": f"r{i}", "tests": json.dumps([{"input": "1", "output": "2"}]),
             "answer": 7} for i in range(10)]
    records = load_records(_spec(write_jsonl(tmp_path / "d.jsonl", rows), max_samples=3))
    assert [r["instruction"] for r in records] == ["i0", "i1", "i2"]
    assert records[0]["tests"] == [{"input": "1", "output": "2"}] and records[0]["answer"] == "7"


@pytest.mark.parametrize("content, line, words", [
    ('{"instruction": "a", "response": "b"}\n{"instruction": "c", "response": \n', 2, "not valid JSON"),
    ('{"instruction": "a", "response": "b"}\n\n{"prompt": "c", "response": "d"}\n', 3, "no column instruction"),
    ('{"instruction": "a", "response": "b"}\n{"instruction": ["x"], "response": "d"}\n', 2, "must be text"),
    ('{"instruction": "a", "response": "b"}\n{"instruction": "c", "response": "  "}\n', 2, "response is empty"),
    ('{"instruction": "", "response": "b"}\n', 1, "instruction is empty"),
    ('{"instruction": "a", "response": "b", "tests": [{"in": 1}]}\n', 1, "tests[0]"),
])
def test_malformed_jsonl_rows_name_file_and_line(tmp_path, content, line, words):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EngineError) as info:
        load_records(_spec(path))
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert words in message


def test_malformed_json_list_and_csv_lines(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"instruction": "a", "response": "b"},\n  {"instruction": 3,\n   "response": "d"}\n]',
                    encoding="utf-8")
    with pytest.raises(EngineError, match=rf"^{path}:3: instruction must be text"):
        load_records(_spec(path))
    path = tmp_path / "bad.csv"
    path.write_text('instruction,response\na,b\n"multi\nline",ok\nc,\n', encoding="utf-8")
    with pytest.raises(EngineError, match=rf"^{path}:5: response is empty"):
        load_records(_spec(path))


def test_duplicate_ids_missing_file_unknown_type_and_bad_mapping(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "instruction": "a", "response": "b"},
                                              {"id": "1", "instruction": "c", "response": "d"}])
    with pytest.raises(EngineError, match=r":2: id '1' repeats"):
        load_records(_spec(path))
    with pytest.raises(EngineError, match="no such file"):
        load_records(_spec(tmp_path / "missing.jsonl"))
    (tmp_path / "d.txt").write_text("x", encoding="utf-8")
    with pytest.raises(EngineError, match="unknown file type"):
        load_records(_spec(tmp_path / "d.txt"))
    with pytest.raises(EngineError, match="'question' is not a canonical field"):
        load_records(_spec(path, columns={"question": "q"}))


# ---------------------------------------------------------------- hub presets on local copies ----------------------

def test_dolly_es_mapping(tmp_path):
    rows = [{"instruction": "¿Cuándo empezó a operar Virgin Australia?", "context": "Virgin Australia comenzó en 2000.",
             "response": "Comenzó a operar el 31 de agosto de 2000.", "category": "closed_qa",
             "instruction_original_en": "When did Virgin Australia start operating?", "context_original_en": "x",
             "response_original_en": "y", "id": 0},
            {"instruction": "Nombra tres colores.", "context": "", "response": "Rojo, verde y azul.",
             "category": "brainstorming", "instruction_original_en": "Name three colours.", "context_original_en": "",
             "response_original_en": "Red, green and blue.", "id": 1}]
    records = load_records(_spec(write_jsonl(tmp_path / "es.jsonl", rows), "dolly_es"))
    assert [r["id"] for r in records] == ["0", "1"]
    assert records[0]["instruction"].startswith("¿Cuándo") and records[0]["language"] == "es"
    assert records[1]["category"] == "brainstorming" and records[1]["context"] == ""


def test_bugnet_mapping_keeps_python_rows_and_builds_tests(tmp_path):
    base = {"problem_id": "p02547", "original_status": "Runtime Error", "change": "replace", "i1": 1, "i2": 2,
            "j1": 1, "j2": 2, "description": "<p>Print a+b</p>", "input": "1 2\n", "output": "3\n"}
    rows = [{**base, "language": "Python", "fail": "a, b = input().split()\nprint(a + b / 0)\n",
             "pass": "a, b = map(int, input().split())\nprint(a + b)\n", "error": "ZeroDivisionError",
             "stderr": "Traceback (most recent call last):\nZeroDivisionError: division by zero"},
            {**base, "language": "C++", "fail": "int main(){}", "pass": "int main(){return 0;}", "error": "WA",
             "stderr": ""},
            {**base, "language": "Python", "change": "insert", "fail": "print(x)\n", "pass": "x = 1\nprint(x)\n",
             "error": "NameError", "stderr": ""}]
    records = load_records(_spec(write_jsonl(tmp_path / "bugnet.jsonl", rows), "bugnet"))
    assert len(records) == 2  # the C++ row is filtered out
    first, second = records
    assert first["instruction"] == rows[0]["fail"] and first["response"] == rows[0]["pass"]
    assert first["context"].endswith("division by zero")
    assert second["context"] == "NameError"  # stderr empty → the short error
    assert first["tests"] == [{"input": "1 2\n", "output": "3\n"}]
    assert [r["category"] for r in records] == ["replace", "insert"]


def test_pytorrent_mapping_cuts_the_docstring(tmp_path):
    code = ('def add(a, b):\n    """Add two numbers and return the sum."""\n    return a + b\n')
    rows = [{"repo": "x/y", "path": "m.py", "func_name": "add", "original_string": code, "language": "python",
             "code": code, "code_tokens": [], "docstring": "Add two numbers and return the sum.",
             "docstring_tokens": [], "sha": "0", "url": "u"}]
    (record,) = load_records(_spec(write_jsonl(tmp_path / "pt.jsonl", rows), "pytorrent"))
    assert record["instruction"] == "Add two numbers and return the sum."
    assert record["response"] == "def add(a, b):\n    return a + b\n"
    assert record["category"] == "function"


def test_codeforces_mapping_splits_reasoning_and_solution(tmp_path):
    rows = [{"id": "1/A", "title": "Sum", "description": "Add two integers.", "input_format": "Two integers a b.",
             "output_format": "Their sum.", "note": None, "contest_type": "CF", "finish_reason": "stop",
             "examples": [{"input": "1 2", "output": "3"}, {"input": "5 5", "output": "10"}],
             "prompt": "You will be given a competitive programming problem...",
             "generation": "<think>\nRead a and b, print a+b.\n</think>\n\n"
                           "```python\nprint(sum(map(int, input().split())))\n```"},
            {"id": "1/B", "title": "Cut", "description": "x", "input_format": "", "output_format": "",
             "contest_type": "CF", "finish_reason": "length", "examples": [], "prompt": "p",
             "generation": "<think> never ends"}]
    (record,) = load_records(_spec(write_jsonl(tmp_path / "cf.jsonl", rows), "codeforces_cot"))
    assert record["id"] == "1/A"
    assert record["instruction"].startswith("# Sum\n\nAdd two integers.\n\n## Input Format\nTwo integers a b.")
    assert record["reasoning"] == "Read a and b, print a+b."
    assert record["response"].startswith("```python\nprint(sum(")
    assert record["tests"] == [{"input": "1 2", "output": "3"}, {"input": "5 5", "output": "10"}]
    assert "Input:\n1 2\nOutput:\n3" in record["context"]


def test_every_hub_preset_has_a_hub_id_and_a_mapping():
    hub = {name: p for name, p in PRESETS.items() if p.on_hub}
    assert set(hub) == {"dolly_en", "dolly_es", "bugnet", "pytorrent", "codeforces_cot"}
    assert PRESETS["dolly_es"].split == "es" and PRESETS["dolly_es"].language == "es"
    for p in hub.values():
        assert "instruction" in p.columns and "response" in p.columns


# ---------------------------------------------------------------- offline ---------------------------------------

@pytest.mark.parametrize("preset", ["dolly_en", "dolly_es", "bugnet", "pytorrent", "codeforces_cot"])
def test_hub_preset_offline_sentence(monkeypatch, preset):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(EngineError) as info:
        load_records(DataSpec(preset=preset))
    message = str(info.value)
    assert message == offline_message(PRESETS[preset], ConnectionError())
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    assert PRESETS[preset].hub_id in message and "data.path" in message and preset in message


def test_hub_preset_with_hf_hub_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    code = ("from engine.training_data.loading import load_records\nfrom engine.contract.spec import DataSpec\n"
            "from engine.core.context import EngineError\n"
            "try:\n    load_records(DataSpec(preset='dolly_en'))\nexcept EngineError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.startswith("ERR data preset 'dolly_en' needs databricks/databricks-dolly-15k"), out.stderr
    assert "cannot be reached" in out.stdout and "data.path" in out.stdout


def test_demo_presets_read_the_kit_files(tmp_path, monkeypatch):
    """The demo presets read ensure_demo_kit()'s two JSONL files (generated here by the kit's own task code,
    without building its models, which takes seconds)."""
    from engine.demo import kit as kit_module
    from engine.demo.tasks import generate_reasoning_records, generate_records

    kit = kit_module.DemoKit.at(tmp_path)
    kit.instructions_file.parent.mkdir(parents=True)
    write_jsonl(kit.instructions_file, generate_records(40, 1))
    write_jsonl(kit.reasoning_file, generate_reasoning_records(30, 2))
    monkeypatch.setattr(kit_module, "ensure_demo_kit", lambda root=None, **kw: kit)
    records = load_records(DataSpec(preset="demo"))
    assert len(records) == 40 and {r["language"] for r in records} == {"en", "es"}
    assert records[0]["id"] == "demo-en-00000"
    reasoning = load_records(DataSpec(preset="demo_reasoning", max_samples=25))
    assert len(reasoning) == 25 and all(r["answer"] or r["tests"] for r in reasoning)
