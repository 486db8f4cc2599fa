"""The wizard's choices hold the typed sub-specs the pages built: the spec (and its YAML) they make is the one the
plain dicts of earlier versions made, spec → choices → spec is the identity, and choices never share a settings
object with a spec."""
from __future__ import annotations

import pytest

from engine.contract.spec import (
    DataSpec,
    DistillSpec,
    ModelSpec,
    RunSpec,
    SpecError,
    TrainSpec,
    build,
    dump_spec,
    stage_kind,
    to_dict,
    updated,
)
from studio.model.wizard_model import (
    METHODS,
    WizardChoices,
    build_spec,
    choices_from_spec,
    stage_dicts,
)

# What the choices held as plain dicts before they held sub-specs: only what the wizard sets.
OLD_DICTS = {"teacher": {"source": "demo:teacher"}, "student": {"source": "demo:student"}, "data": {"preset": "demo"},
             "distill": {"alpha": 0.5, "temperature": 1.0, "divergence": "forward_kl"}, "grpo": {"beta": 0.01},
             "quantize": {}, "train": {"learning_rate": 1e-3, "max_steps": 200, "batch_size": 8}}


def _old_spec(method: str) -> RunSpec:
    """The spec the dict-holding choices built for a method left at its defaults."""
    stages = []
    for stage in stage_dicts(WizardChoices(method=method)):
        old = dict(stage)
        if stage_kind(stage["kind"]).trains:
            old["train"] = dict(OLD_DICTS["train"])
        if stage["kind"] == "distill":
            old["distill"] = {**OLD_DICTS["distill"], "method": stage["distill"]["method"]}
        for key in ("grpo", "quantize"):
            if stage["kind"] == key:
                old[key] = dict(OLD_DICTS[key])
        stages.append(old)
    return build(RunSpec, {"name": "my-run", "teacher": OLD_DICTS["teacher"], "student": OLD_DICTS["student"],
                           "data": OLD_DICTS["data"], "stages": stages, "device": "auto"}, "spec")


@pytest.mark.parametrize("method", list(METHODS))
def test_default_choices_make_the_yaml_the_dicts_made(method):
    spec = build_spec(WizardChoices(method=method))
    assert spec == _old_spec(method)
    assert dump_spec(spec) == dump_spec(_old_spec(method))  # the review page's text, byte for byte


def _custom_spec(method: str) -> RunSpec:
    """A spec with settings no page shows (revision, seeds, LoRA targets, a teacher cache, a GRPO template) and,
    for the pipeline, a different train block per stage."""
    choices = WizardChoices(method=method, teacher=ModelSpec("demo:teacher", revision="v2"),
                            data=DataSpec(seed=7, max_length=256),
                            distill=DistillSpec(alpha=0.25, divergence="jsd", chunk_size=64,
                                                teacher_cache={"enabled": True, "top_k": 8}),
                            train=TrainSpec(learning_rate=3e-4, lora={"enabled": True, "target_modules": "q_proj"}))
    choices.grpo = updated(choices.grpo, {"template": "Q: {prompt}", "num_generations": 3}, "grpo")
    choices.quantize = updated(choices.quantize, {"quant_type": "fp4", "report": False}, "quantize")
    if method == "pipeline":
        choices.same_train = False
        choices.stage_train = {name: TrainSpec(learning_rate=lr, max_steps=10 * i + 1) for i, (name, lr) in
                               enumerate((("teacher_sft", 1e-5), ("student_sft", 2e-5), ("student_kd", 3e-5),
                                          ("grpo", 4e-5)))}
    return build_spec(choices)


@pytest.mark.parametrize("method", list(METHODS))
def test_spec_to_choices_to_spec_is_the_identity(method):
    spec = _custom_spec(method)
    choices = choices_from_spec(spec)
    assert isinstance(choices.teacher, ModelSpec) and isinstance(choices.data, DataSpec)
    assert isinstance(choices.train, TrainSpec)
    assert build_spec(choices) == spec and dump_spec(build_spec(choices)) == dump_spec(spec)
    if method == "pipeline":
        assert not choices.same_train and choices.stage_train["grpo"].learning_rate == 4e-5
        assert spec.stage("grpo").grpo.template == "Q: {prompt}" and spec.stage("quantize").quantize.report is False


def test_choices_and_specs_never_share_a_settings_object():
    spec = _custom_spec("token_kd")
    choices = choices_from_spec(spec)
    choices.train.learning_rate = 0.5  # a page's edit of the choices ...
    choices.teacher.dtype = "float16"
    assert spec.stage("student_kd").train.learning_rate == 3e-4 and spec.teacher.dtype == "auto"  # ... not the spec's
    built = build_spec(choices)
    trains = [s.train for s in built.stages if stage_kind(s).trains]
    assert len({id(t) for t in trains}) == len(trains) and all(t is not choices.train for t in trains)
    assert built.teacher is not choices.teacher


def test_updated_keeps_what_it_is_not_given_and_refuses_with_the_field():
    base = DataSpec(seed=3, columns={"instruction": "q", "response": "a"})
    new = updated(base, {"max_length": 128}, "data")
    assert (new.max_length, new.seed, new.columns, base.max_length) == (128, 3, base.columns, 512)
    assert new.columns is not base.columns
    with pytest.raises(SpecError, match=r"^distill\.alpha: "):
        updated(WizardChoices().distill, {"alpha": 1.5}, "distill")
    with pytest.raises(SpecError, match="unknown setting 'nope'"):
        updated(base, {"nope": 1}, "data")
    lora = to_dict(updated(TrainSpec(), {"lora": {"r": 4}}, "train"))["lora"]
    assert lora == to_dict(TrainSpec(lora={"r": 4}))["lora"]
