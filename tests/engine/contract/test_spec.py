"""Run specs: defaults round-trip through YAML and JSON; every bad value is refused with a sentence naming it."""
from __future__ import annotations

import dataclasses

import pytest

from engine.demo.pipeline import demo_spec
from engine.contract.spec import (STAGE_KIND_TABLE, DataSpec, DistillSpec, GRPOSpec, RunSpec, SpecError, TrainSpec,
                                  build, dump_spec, field_help, load_spec)

BASE = {"name": "t", "stages": [{"kind": "sft", "name": "teacher_sft", "model": "teacher"}]}


def _spec(**changes) -> dict:
    values = {**BASE, **changes}
    return values


def test_demo_spec_round_trips_through_yaml_and_json(tmp_path):
    spec = demo_spec()
    for suffix in (".yaml", ".json"):
        path = tmp_path / f"spec{suffix}"
        dump_spec(spec, path)
        assert load_spec(path) == spec


@pytest.mark.parametrize("cls", [RunSpec, DataSpec, TrainSpec, DistillSpec, GRPOSpec]
                         + [row.stage_class for row in STAGE_KIND_TABLE.values()])
def test_every_field_has_help_text(cls):
    for f in dataclasses.fields(cls):
        assert field_help(cls, f.name).strip(), f"{cls.__name__}.{f.name} has no help"


@pytest.mark.parametrize("stage_patch, field_name", [
    ({"kind": "distill", "distill": {"alpha": 1.5}}, "distill.alpha"),
    ({"kind": "distill", "distill": {"alpha": -0.1}}, "distill.alpha"),
    ({"kind": "distill", "distill": {"temperature": 0}}, "distill.temperature"),
    ({"kind": "distill", "distill": {"divergence": "kl"}}, "distill.divergence"),
    ({"kind": "distill", "distill": {"jsd_beta": 2}}, "distill.jsd_beta"),
    ({"train": {"learning_rate": 0}}, "train.learning_rate"),
    ({"train": {"learning_rate": -1e-4}}, "train.learning_rate"),
    ({"train": {"sweep_learning_rates": [1e-3, -1]}}, "train.sweep_learning_rates[1]"),
    ({"train": {"batch_size": 0}}, "train.batch_size"),
    ({"train": {"lora": {"r": 0}}}, "lora.r"),
    ({"kind": "grpo", "grpo": {"num_generations": 1}}, "grpo.num_generations"),
    ({"kind": "grpo", "grpo": {"template": "no slot"}}, "grpo.template"),
    ({"kind": "grpo", "grpo": {"rewards": [{"name": "vibes"}]}}, "reward.name"),
    ({"kind": "bake"}, "stages[0].kind"),
    ({"train": {"learnig_rate": 1e-3}}, "learnig_rate"),
])
def test_bad_stage_values_name_their_field(stage_patch, field_name):
    stage = {"kind": "sft", "name": "s", "model": "student", **stage_patch}
    with pytest.raises(SpecError) as err:
        build(RunSpec, _spec(stages=[stage]))
    assert field_name in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("data, field_name", [
    ({"preset": "wikipedia"}, "data.preset"),
    ({"preset": "local"}, "data.path"),
    ({"test_fraction": 1.0}, "data.test_fraction"),
    ({"validation_fraction": 0.5, "test_fraction": 0.5}, "data.test_fraction"),
    ({"max_length": 4}, "data.max_length"),
])
def test_bad_data_values_name_their_field(data, field_name):
    with pytest.raises(SpecError, match=field_name.replace(".", r"\.")):
        build(RunSpec, _spec(data=data))


def test_empty_pipeline_and_unknown_references_are_refused():
    with pytest.raises(SpecError, match="stages"):
        build(RunSpec, _spec(stages=[]))
    with pytest.raises(SpecError, match="teacher_sft"):
        build(RunSpec, _spec(stages=[{"kind": "distill", "name": "kd", "teacher": "teacher_sft"}]))
    with pytest.raises(SpecError, match="reference"):
        build(RunSpec, _spec(stages=[{"kind": "evaluate", "models": {"a": "student"}, "reference": "b"}]))


def test_later_stages_may_use_earlier_outputs():
    spec = build(RunSpec, _spec(stages=[{"kind": "sft", "name": "teacher_sft", "model": "teacher"},
                                        {"kind": "distill", "name": "kd", "teacher": "teacher_sft"}]))
    assert spec.stage("kd").teacher == "teacher_sft"


def test_bad_files_name_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nstages: [\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"bad\.yaml: line \d+"):
        load_spec(path)
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
