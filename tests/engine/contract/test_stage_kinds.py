"""One class per stage kind and the kinds' table: a stage holding another kind's settings is refused by name,
specs written before the classes (every block in every stage) still load with a warning, a dumped spec is about
the size of what was written and loads back to the same spec, and the table is what the pipeline, the ranks,
the memory plan and the recipe lookup read."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import yaml

from engine.contract.spec import (RunSpec, SpecError, build, dump_spec, load_spec, parse_spec_text, to_dict)
from engine.contract.stage_kinds import STAGE_KIND_TABLE, build_stage, stage_kind
from engine.contract.stage_specs import KD_METHOD_KNOBS, DistillSpec
from engine.contract.stages import StageSpec
from engine.contract.vocabulary import KD_METHODS
from engine.demo.pipeline import demo_spec

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
BLOCKS = ("train", "distill", "grpo", "quantize", "export", "generation")


def _run(*stages: dict) -> RunSpec:
    return build(RunSpec, {"name": "r", "stages": list(stages)}, "spec")


# ------------------------------------------------------------------ one class per kind

@pytest.mark.parametrize("kind", list(STAGE_KIND_TABLE))
def test_each_kind_refuses_the_blocks_it_does_not_use_by_name(kind):
    cls = STAGE_KIND_TABLE[kind].stage_class
    own = {f.name for f in dataclasses.fields(cls)}
    foreign = [b for b in BLOCKS if b not in own]
    assert foreign, kind
    for block in foreign:
        holders = [k for k, row in STAGE_KIND_TABLE.items() if block in row.stage_class.BLOCKS]
        # a value no kind has by default: the block is the user's intent, not an old dump
        value = {"train": {"max_steps": 3}, "distill": {"alpha": 0.25}, "grpo": {"beta": 0.5},
                 "quantize": {"quant_type": "fp4"}, "export": {"formats": ["q8_0"]},
                 "generation": {"batch_size": 3}}[block]
        with pytest.raises(SpecError) as info:
            _run({"kind": kind, "name": "s", block: value})
        message = str(info.value)
        assert f"stage 's' ({kind}) has a '{block}' block, which only" in message, message
        assert all(h in message for h in holders) and message.endswith("use: remove it.")


def test_the_issue_sentence_for_an_sft_stage_with_a_distill_block():
    with pytest.raises(SpecError, match=r"stages\[0\]: stage 'teacher_sft' \(sft\) has a 'distill' block, which "
                                        r"only distill stages use: remove it\."):
        _run({"kind": "sft", "name": "teacher_sft", "distill": {"alpha": 0.7}})


@pytest.mark.parametrize("stage, field", [
    ({"kind": "sft", "teacher": "student"}, "'teacher'"),
    ({"kind": "sft", "max_eval_samples": 5}, "'max_eval_samples'"),
    ({"kind": "export", "references": 0.5}, "'references'"),
    ({"kind": "quantize", "models": {"a": "student"}}, "'models'"),
])
def test_scalar_settings_of_other_kinds_are_refused_by_name(stage, field):
    with pytest.raises(SpecError, match=f"has {field}, which only"):
        _run({"name": "s", **stage})


@pytest.mark.parametrize("method", [m for m in KD_METHODS if "alpha" not in KD_METHOD_KNOBS[m]])
def test_alpha_is_refused_where_the_kd_method_ignores_it(method):
    assert method in ("sequence", "on_policy")  # the joint losses (token, cross_tokenizer) weigh CE by alpha
    with pytest.raises(SpecError, match=rf"distill\.alpha: is ignored by .*\(method: {method}\); only token and "
                                        "cross_tokenizer KD read it"):
        _run({"kind": "distill", "distill": {"method": method, "alpha": 0.7}})
    stage = _run({"kind": "distill", "distill": {"method": method, "alpha": 0.5}}).stages[0]  # the default: fine
    assert stage.distill.method == method


def test_every_kd_knob_is_read_by_some_method_and_each_method_refuses_the_rest():
    assert set(KD_METHOD_KNOBS) == set(KD_METHODS)
    knobs = {f.name for f in dataclasses.fields(DistillSpec)} - {"method"}
    assert set().union(*KD_METHOD_KNOBS.values()) == knobs
    changed = {"alpha": 0.3, "temperature": 2.0, "divergence": "jsd", "jsd_beta": 0.2, "top_k": 5, "chunk_size": 7,
               "sequence_mix": 0.4, "max_new_tokens": 9, "teacher_cache": {"enabled": True}}
    assert set(changed) == knobs
    for method, used in KD_METHOD_KNOBS.items():
        for knob in knobs:
            values = {"method": method, knob: changed[knob]}
            if knob in used:
                assert build(DistillSpec, values, "distill").method == method
            else:
                with pytest.raises(SpecError, match=f"distill.{knob}: is ignored by"):
                    build(DistillSpec, values, "distill")


def test_a_stage_class_is_built_only_for_its_own_kind():
    sft = STAGE_KIND_TABLE["sft"].stage_class
    assert sft(name="a").kind == "sft" and build(sft, {"kind": "sft", "name": "a"}) == sft(name="a")
    with pytest.raises(SpecError, match="kind: is 'sft' for SFTStage, got 'grpo'"):
        build(sft, {"kind": "grpo"})
    with pytest.raises(TypeError):
        StageSpec(name="a")  # what every stage shares, never a stage itself
    assert build_stage({"name": "x"}).kind == "sft"  # no kind: sft, as specs have always read


# ------------------------------------------------------------------ specs written for the landed format

def _legacy_stage(stage: RunSpec | object) -> dict:
    """A stage as the landed dumper wrote it: every setting of every kind, defaults included."""
    full: dict = {}
    for row in STAGE_KIND_TABLE.values():
        full.update(to_dict(row.stage_class()))
    return {**full, **to_dict(stage)}


def test_legacy_specs_with_every_block_in_every_stage_load_with_a_warning(caplog):
    spec = load_spec(ROOT / "examples" / "dolly_en.yaml")
    legacy = {**to_dict(spec), "stages": [_legacy_stage(s) for s in spec.stages]}
    legacy_text = yaml.safe_dump(legacy, sort_keys=False)
    assert len(legacy_text.splitlines()) > 300 and legacy_text.count("alpha: 0.5") == 5
    with caplog.at_level(logging.WARNING, logger="engine.contract.stages"):
        again = build(RunSpec, parse_spec_text(legacy_text), "spec")
    assert again == spec
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == len(spec.stages)  # one sentence per stage
    assert warned[0].startswith("stage 'teacher_sft' (sft): ignoring ") and warned[0].endswith("remove them.")
    ignored = warned[0].split("ignoring ")[1].split(", which")[0].split(", ")
    every = {f.name for row in STAGE_KIND_TABLE.values() for f in dataclasses.fields(row.stage_class)}
    sft = {f.name for f in dataclasses.fields(STAGE_KIND_TABLE["sft"].stage_class)}
    assert sorted(ignored) == sorted(every - sft) and {"distill", "grpo", "teacher", "models"} <= set(ignored)
    evaluate = next(w for w in warned if "(evaluate)" in w)
    assert "train" in evaluate and "references" in evaluate and "models" not in evaluate.split("ignoring")[1]


def test_a_legacy_block_that_is_not_the_default_is_refused_not_ignored():
    spec = demo_spec(quick=True)
    legacy = _legacy_stage(spec.stages[0])
    legacy["grpo"]["beta"] = 0.3  # someone set it, believing the sft stage used it
    with pytest.raises(SpecError, match="stage 'teacher_sft' \\(sft\\) has a 'grpo' block, which only grpo"):
        build(RunSpec, {"name": "r", "stages": [legacy]}, "spec")


# ------------------------------------------------------------------ dumping what was written

@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_dump_to_about_their_own_size_and_load_back_the_same(path, tmp_path):
    spec = load_spec(path)
    text = dump_spec(spec)
    written = [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(text.splitlines()) <= len(written) + 6, text
    for suffix in (".yaml", ".json"):
        out = tmp_path / f"spec{suffix}"
        dump_spec(spec, out)
        assert load_spec(out) == spec


@pytest.mark.parametrize("quick", [False, True])
def test_the_demo_spec_round_trips_and_dumps_no_defaults(quick):
    spec = demo_spec(quick=quick)
    text = dump_spec(spec)
    assert build(RunSpec, parse_spec_text(text), "spec") == spec
    assert "alpha" not in text and "grpo" not in text and "quantize" not in text
    assert all(f"kind: {s.kind}" in text and f"name: {s.name}" in text for s in spec.stages)


def test_a_default_stage_still_says_its_kind_and_name():
    spec = _run({"kind": "export", "name": "gguf", "model": "student"})
    assert yaml.safe_load(dump_spec(spec))["stages"] == [{"kind": "export", "name": "gguf", "model": "student"}]


# ------------------------------------------------------------------ the table is what the engine reads

def test_every_row_names_a_class_of_its_own_kind_and_an_existing_recipe_and_estimate():
    from engine.models.memory_plan import ESTIMATES
    from engine.recipes import recipe_for

    assert len({row.stage_class for row in STAGE_KIND_TABLE.values()}) == len(STAGE_KIND_TABLE)
    for kind, row in STAGE_KIND_TABLE.items():
        assert row.stage_class().kind == kind and stage_kind(kind) is row
        assert recipe_for(kind).__name__ == f"engine.recipes.{row.recipe}"
        assert row.memory in ESTIMATES
        assert row.wizard_page in ("settings", "method", "")
        assert row.settings in row.stage_class.BLOCKS
        assert not (row.trains and row.rank_zero_only)  # a trainer shards its data over every rank
        assert ("train" in row.stage_class.BLOCKS) == row.trains


def test_the_ranks_follow_the_table(monkeypatch):
    from engine.core import ranks

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for kind, row in STAGE_KIND_TABLE.items():
        ran: list[str] = []
        result = ranks.run_stage_on_ranks(kind, lambda ran=ran, kind=kind: ran.append(kind) or "done")
        assert result == (None if row.rank_zero_only else "done")
        assert ran == ([] if row.rank_zero_only else [kind])


def test_the_memory_plan_reads_the_table(monkeypatch):
    from engine.models import memory_plan

    calls = []
    for entry in set(row.memory for row in STAGE_KIND_TABLE.values()):
        monkeypatch.setitem(memory_plan.ESTIMATES, entry, lambda s, st, d, dims, e=entry: calls.append(e) or {"w": 1})
    spec = demo_spec(quick=True)
    for stage in spec.stages:
        assert memory_plan.stage_parts(spec, stage, "cpu", None) == {"w": 1}
    assert calls == [stage_kind(s).memory for s in spec.stages]
    trains = [s for s in spec.stages if stage_kind(s).trains]
    assert all(any("gradient_checkpointing" in text for text, _ in memory_plan._changes(spec, s)) for s in trains)
    evaluate = next(s for s in spec.stages if not stage_kind(s).trains)
    assert not any(text.startswith("train.") for text, _ in memory_plan._changes(spec, evaluate))


def test_the_pipeline_counts_optimizer_steps_only_for_the_kinds_that_train():
    from engine.runner.pipeline import stage_plan

    spec = _run({"kind": "sft", "name": "a", "train": {"max_steps": 5, "sweep_learning_rates": [1e-4, 1e-3]}},
                {"kind": "evaluate", "name": "e", "model": "a"}, {"kind": "export", "name": "x", "model": "a"})
    plan = stage_plan(spec)
    assert [p["steps"] for p in plan] == [10, None, None]
    assert [p["kind"] for p in plan] == [s.kind for s in spec.stages]
    assert [stage_kind(s).trains for s in spec.stages] == [True, False, False]
