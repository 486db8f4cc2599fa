"""GRPO's cold start (issue 20, item 7): one template for the SFT stage's examples, GRPO's prompts and the rewards'
parser, and a short cold start on the demo kit that makes the student write the template GRPO rewards."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch

from engine.contract.cot_template import COT_TEMPLATE, cot_record, task_prompt
from engine.contract.protocol import EventWriter
from engine.contract.runs import RunPaths
from engine.contract.spec import (DataSpec, GRPOSpec, GRPOStage, RewardSpec, RunSpec, SFTStage, SpecError,
                                  TrainSpec)
from engine.core.context import EngineError, RunContext

PRESET = "demo_reasoning"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    from engine.demo.kit import ensure_demo_kit

    home = tmp_path_factory.mktemp("cold-start-home")
    old_home, old_threads = os.environ.get("COMPRESSION_STUDIO_HOME"), torch.get_num_threads()
    os.environ["COMPRESSION_STUDIO_HOME"] = str(home)
    torch.set_num_threads(1)  # a 0.5 M-parameter model: threads only add contention on a busy 2-core machine
    ensure_demo_kit()
    yield home
    torch.set_num_threads(old_threads)
    if old_home is None:
        os.environ.pop("COMPRESSION_STUDIO_HOME", None)
    else:
        os.environ["COMPRESSION_STUDIO_HOME"] = old_home


def _records(home: Path) -> tuple[dict, dict]:
    """A kit record with a reference answer and one with a program and tests, both with a reasoning trace."""
    from engine.training_data.loading import load_records

    records = load_records(DataSpec(preset=PRESET))
    answer = next(r for r in records if r.get("answer") and r.get("reasoning"))
    program = next(r for r in records if r.get("tests") and r.get("reasoning"))
    return answer, program


def test_the_cold_start_writes_exactly_grpos_prompt_and_what_its_rewards_parse(home: Path) -> None:
    from engine.recipes.grpo import grpo_rows
    from engine.rewards.functions import (extract_program, make_answer_correct, make_format_strict,
                                          make_reasoning_structure)

    assert GRPOSpec().template == COT_TEMPLATE  # one home for the template's text
    answer, program = _records(home)
    for record in (answer, program):
        cold = cot_record(record, COT_TEMPLATE, PRESET)
        row = grpo_rows([record], COT_TEMPLATE, PRESET, correctness_only=True)[0]
        assert cold["messages"][0] == row["prompt"][0]  # the user turn GRPO asks, character for character
        assert cold["messages"][1]["content"] == cold["response"]
        completion = [cold["response"]]
        assert make_format_strict()([""], completion) == [1.0]
        assert make_reasoning_structure()([""], completion)[0] > 0
    cold_answer = cot_record(answer, COT_TEMPLATE, PRESET)["response"]
    assert make_answer_correct()([""], [cold_answer], answer=[answer["answer"]]) == [1.0]
    assert make_answer_correct()([""], [cold_answer], answer=[answer["answer"] + "1"]) == [0.0]
    assert extract_program(cot_record(program, COT_TEMPLATE, PRESET)["response"]).strip() == \
        program["response"].strip()
    assert cot_record({**answer, "reasoning": None}, COT_TEMPLATE, PRESET) is None  # nothing to teach


def test_the_sft_examples_prompt_tokens_are_those_grpo_generates_from(home: Path) -> None:
    from engine.demo.kit import ensure_demo_kit
    from engine.models.loading import load_tokenizer
    from engine.contract.spec import ModelSpec
    from engine.training_data.formatting import IGNORE_INDEX, encode_example, encode_prompt

    tokenizer = load_tokenizer(ModelSpec(str(ensure_demo_kit().student_dir)))
    answer, _ = _records(home)
    example = encode_example(tokenizer, cot_record(answer, COT_TEMPLATE, PRESET), PRESET, 512)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": task_prompt(answer, COT_TEMPLATE, PRESET)}],
                                           tokenize=False, add_generation_prompt=True)
    prompt_ids = encode_prompt(tokenizer, prompt)
    n = sum(1 for label in example["labels"] if label == IGNORE_INDEX)
    assert example["input_ids"][:n] == prompt_ids  # loss only after exactly GRPO's prompt
    target = tokenizer.decode(example["input_ids"][n:])
    assert target.startswith("<think>\n") and target.endswith("</answer><|im_end|>")


def test_the_sft_format_is_checked_and_data_without_traces_is_refused(home: Path, tmp_path: Path) -> None:
    from engine.recipes import sft

    with pytest.raises(SpecError, match=r"c\.format: 'cot' is not one of plain, cot_template"):
        SFTStage(name="c", format="cot")
    rows = tmp_path / "plain.jsonl"  # instructions and responses, no reasoning column
    rows.write_text("".join(f'{{"instruction": "Say {i}.", "response": "{i}"}}\n' for i in range(20)))
    spec = RunSpec(name="t", data=DataSpec(preset="local", path=str(rows)),
                   stages=[SFTStage(name="c", format="cot_template")], device="cpu")
    ctx = RunContext(spec=spec, stage=spec.stages[0], paths=None, events=EventWriter("t", stream=io.StringIO()),
                     device="cpu")
    with pytest.raises(EngineError, match="none of the .* training records has one; use data with a reasoning"):
        sft.validate(ctx)


def test_a_short_cold_start_makes_grpo_earn_the_format_reward(home: Path, tmp_path: Path) -> None:
    """The demo's untrained student never writes the template (format reward 0 on every completion); 60 cold-start
    steps later most of its sampled completions earn it in GRPO's own first step."""
    import json

    from engine.recipes import grpo, sft

    data = DataSpec(preset=PRESET, max_samples=400, seed=1)
    train = TrainSpec(max_steps=60, batch_size=16, learning_rate=3e-3, logging_steps=20, warmup_ratio=0.0,
                      scheduler="constant", save_steps=1000)
    rewards = [RewardSpec("format_strict", 1.0), RewardSpec("answer_correct", 1.0)]

    def grpo_stage(model: str) -> GRPOStage:
        return GRPOStage(name="grpo", model=model, max_eval_samples=2,
                         train=TrainSpec(max_steps=1, batch_size=16, learning_rate=1e-4, logging_steps=1,
                                         warmup_ratio=0.0, scheduler="constant", save_steps=1000),
                         grpo=GRPOSpec(num_generations=4, max_completion_length=40, temperature=0.7, beta=0.0,
                                       rewards=rewards, sample_every=1))

    def run(spec: RunSpec, index: int, root: Path) -> tuple[object, list[dict]]:
        stream = io.StringIO()
        ctx = RunContext(spec=spec, stage=spec.stages[index], paths=RunPaths(root),
                         events=EventWriter("t", stream=stream), device="cpu")
        module = sft if spec.stages[index].kind == "sft" else grpo
        result = module.run_stage(ctx)
        return result, [json.loads(line) for line in stream.getvalue().splitlines()]

    cold = SFTStage(name="cold_start", model="demo:student", format="cot_template", train=train)
    spec = RunSpec(name="cold", data=data, stages=[cold, grpo_stage("cold_start")], device="cpu")
    cold_result, _ = run(spec, 0, tmp_path / "cold")
    spec.stages[1].model = str(cold_result.model_dir)
    _, with_cold = run(spec, 1, tmp_path / "cold")
    plain = RunSpec(name="plain", data=data, stages=[grpo_stage("demo:student")], device="cpu")
    _, without = run(plain, 0, tmp_path / "plain")

    def format_reward(events: list[dict]) -> float:
        values = [e["data"]["values"]["grpo/reward/format_strict"] for e in events
                  if e["type"] == "metric" and "grpo/reward/format_strict" in e["data"]["values"]]
        assert len(values) == 1
        return values[0]

    assert format_reward(without) == 0.0  # the untrained student never writes the template
    assert format_reward(with_cold) > 0.5, format_reward(with_cold)
