"""Hostile specs: every numeric field finite and bounded, every wrong type a sentence naming the field, and YAML
that cannot blow up memory or the stack (issue 14, "finite or failed" and "bounded input")."""
from __future__ import annotations

import dataclasses
import math
import os

import pytest

from engine.contract.spec import (MAX_SPEC_BYTES, STAGE_KIND_TABLE, GRPOSpec, RunSpec, SpecError, TrainSpec, build,
                         check_value, load_spec, option, parse_spec_text)


def _numeric_fields() -> list[tuple[type, str, tuple]]:
    """(class, field, path from the spec's root) of every int/float field of every spec class, found by walking
    the spec's nested settings of every stage kind's class (so fields other slices add are covered too); a
    stage's path starts ("stages", 0, kind)."""
    out = []
    todo = [(RunSpec, ())] + [(row.stage_class, ("stages", 0, kind)) for kind, row in STAGE_KIND_TABLE.items()]
    while todo:
        cls, path = todo.pop()
        for f in dataclasses.fields(cls):
            if f.type in ("int", "float"):
                out.append((cls, f.name, path + (f.name,)))
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default):
                todo.append((type(default), path + (f.name,)))
    return out


NUMERIC = _numeric_fields()


def _spec_with(path: tuple, value) -> dict:
    """A minimal spec mapping with ``value`` at ``path``."""
    in_stage = path[:2] == ("stages", 0)
    stage: dict = {"kind": path[2] if in_stage else "sft", "name": "s"}
    spec: dict = {"name": "x", "stages": [stage]}
    node = stage if in_stage else spec
    keys = path[3:] if in_stage else path
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return spec


def test_every_numeric_field_is_found():
    names = {(cls.__name__, name) for cls, name, _ in NUMERIC}
    assert {("TrainSpec", "learning_rate"), ("GRPOSpec", "num_generations"), ("DataSpec", "max_length"),
            ("LoraSpec", "dropout"), ("DistillSpec", "temperature"), ("RunSpec", "processes")} <= names
    assert len(NUMERIC) >= 35


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_every_numeric_field_refuses_non_finite_values(bad):
    for _cls, name, path in NUMERIC:
        with pytest.raises(SpecError, match=f"{name}: must be a finite number") as info:
            build(RunSpec, _spec_with(path, bad), "spec")
        assert "\n" not in str(info.value)


def test_every_numeric_field_refuses_wrong_types_and_absurd_sizes():
    for _cls, name, path in NUMERIC:
        for bad in ([1, 2], {"a": 1}, "many", True):
            with pytest.raises(SpecError, match=f"{name}: expected (an integer|a number)"):
                build(RunSpec, _spec_with(path, bad), "spec")
        with pytest.raises(SpecError, match=f"{name}: .*too large"):
            build(RunSpec, _spec_with(path, 10 ** 30), "spec")


@pytest.mark.parametrize("value", [10, 1.5, 1e300])
def test_a_learning_rate_above_one_is_refused_with_a_reason(value):
    with pytest.raises(SpecError, match=r"learning_rate: .* too large \(at most 1\); a learning rate above 1"):
        build(RunSpec, _spec_with(("stages", 0, "sft", "train", "learning_rate"), value), "spec")
    with pytest.raises(SpecError, match="sweep_learning_rates"):
        build(RunSpec, _spec_with(("stages", 0, "sft", "train", "sweep_learning_rates"), [1e-3, value]), "spec")
    with pytest.raises(SpecError, match="learning_rate"):
        TrainSpec(learning_rate=value)  # built in code, too


def test_direct_construction_refuses_nan_too():
    with pytest.raises(SpecError, match="finite"):
        GRPOSpec(num_generations=math.nan)
    with pytest.raises(SpecError, match="finite"):
        TrainSpec(learning_rate=math.nan)


def test_yaml_numbers_written_as_text_are_read_as_numbers():
    spec = parse_spec_text("name: x\nstages:\n  - {kind: sft, train: {learning_rate: 1e-4, max_steps: 1e3}}\n")
    train = build(RunSpec, spec, "spec").stages[0].train
    assert train.learning_rate == 1e-4 and train.max_steps == 1000 and isinstance(train.max_steps, int)


@pytest.mark.parametrize("text, sentence", [
    ("name: 123\nstages: [{kind: sft}]\n", "name: expected text, got 123"),
    ("name: x\nstages: [{kind: sft, name: 7}]\n", "stages[0].name: expected text"),
    ("name: x\nstages: [{kind: sft, name: '..'}]\n", "stage.name: '..' must start with"),
    ("name: x\nstages: [{kind: sft, model: [a]}]\n", "stages[0].model: expected text"),
    ("name: x\nstages: [{kind: evaluate, models: {a: 1}, reference: a}]\n", "evaluate.models: must map"),
    ("name: x\ndata: {columns: {instruction: [1]}}\nstages: [{kind: sft}]\n", "data.columns: must map"),
    ("name: x\nteacher: {load_in_4bit: 3}\nstages: [{kind: sft}]\n", "teacher.load_in_4bit: expected true or false"),
    ("name: x\nstages: 5\n", "stages: expected a list"),
    ("name: x\nstages: [{kind: sft, train: 5}]\n", "sft.train: expected a mapping"),
    ("name: x\nstages: [{kind: sft, bogus: 1}]\n", "unknown setting 'bogus'"),
    ("name: x\n1: 2\nstages: [{kind: sft}]\n", "unknown setting '1'"),
    ("name: x\nstages: [{kind: sft, name: a}, {kind: sft, name: a}]\n", "stages.a: names a stage like an earlier"),
    ("name: x\nname: y\nstages: [{kind: sft}]\n", "'name' is given twice"),
    ("name: x\ndata: {seed: -1}\nstages: [{kind: sft}]\n", "data.seed: must be ≥ 0"),
    ("name: x\nstages: [{kind: grpo, grpo: {length_range: [.nan, 3]}}]\n", "grpo.length_range"),
    ("name: x\nstages: [{kind: grpo, grpo: {rewards: [{name: length, weight: .inf}]}}]\n", "weight: must be a finite"),
    ("", "must be a mapping"),
    ("- a\n- b\n", "must be a mapping"),
])
def test_wrong_types_and_shapes_get_a_sentence_naming_the_field(text, sentence):
    with pytest.raises(SpecError) as info:
        build(RunSpec, parse_spec_text(text), "spec")
    assert sentence in str(info.value)


def test_a_field_added_later_is_checked_without_code_of_its_own():
    """Other slices add fields (precision, data formats): the generic check covers them."""
    f = dataclasses.field(default=1.0, metadata={"help": "", "high": 8.0, "hint": ""})
    f.name, f.type = "new_knob", "float"
    assert check_value("train.new_knob", f, "2") == 2.0
    for bad, sentence in ((math.nan, "finite"), (9.0, "too large"), ("x", "expected a number")):
        with pytest.raises(SpecError, match=sentence):
            check_value("train.new_knob", f, bad)

    @dataclasses.dataclass
    class Extra:
        steps: int = option(1, "Some steps.")
        label: str | None = option(None, "A label.")

    assert build(Extra, {"steps": 3, "label": None}).steps == 3
    with pytest.raises(SpecError, match="extra.steps: must be a finite number"):
        build(Extra, {"steps": math.inf}, "extra")
    with pytest.raises(SpecError, match="extra.label: expected text"):
        build(Extra, {"label": 5}, "extra")


def test_a_yaml_alias_bomb_is_refused_before_it_expands():
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        levels.append(f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]")
    text = "\n".join(levels) + "\nname: x\n"
    assert len(text) < 1000
    with pytest.raises(SpecError, match="expands to more than"):
        parse_spec_text(text)


def test_a_small_honest_alias_is_fine():
    text = "name: x\ndefaults: &d {max_steps: 2}\n"
    assert parse_spec_text(text)["defaults"] == {"max_steps": 2}


@pytest.mark.parametrize("text", ["name: " + "[" * 3000 + "]" * 3000, "name: &a [*a]\n",
                                  "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200))])
def test_deep_or_self_referencing_yaml_is_refused(text):
    with pytest.raises(SpecError, match="nested too deeply|expands to more"):
        parse_spec_text(text)


def test_deep_json_is_refused():
    with pytest.raises(SpecError, match="nested too deeply"):
        parse_spec_text('{"a": ' * 50_000 + "1" + "}" * 50_000, json_format=True)
    with pytest.raises(SpecError, match="finite"):
        build(RunSpec, parse_spec_text('{"name": "x", "stages": [{"kind": "sft", "train": {"epochs": NaN}}]}',
                                       json_format=True), "spec")


def test_spec_files_that_are_not_specs(tmp_path):
    binary = tmp_path / "model.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 10)
    with pytest.raises(SpecError, match="model.yaml: is not UTF-8 text"):
        load_spec(binary)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: café\n".encode("latin-1"))
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(latin1)
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"# " + b"x" * MAX_SPEC_BYTES)
    with pytest.raises(SpecError, match="too large for a spec"):
        load_spec(huge)
    empty = tmp_path / "empty.yaml"
    empty.write_bytes(b"")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(empty)
    with pytest.raises(SpecError, match="is a folder"):
        load_spec(tmp_path)


def test_a_fifo_or_device_named_as_a_spec_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)  # no writer: a plain open() would block forever
    with pytest.raises(SpecError, match="spec.yaml: is not a regular file"):
        load_spec(fifo)
    with pytest.raises(SpecError, match="is not a regular file"):
        load_spec("/dev/zero")


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv"])
def test_data_files_that_are_not_utf8_get_a_sentence(tmp_path, suffix):
    from engine.contract.data.readers import iter_rows
    from engine.contract.errors import FileProblem

    path = tmp_path / f"data{suffix}"
    path.write_bytes(b"\xff\xfe\x00\x89PNG binary\n\xff")
    with pytest.raises(FileProblem, match=f"data{suffix}: not UTF-8 text"):
        list(iter_rows(path))
