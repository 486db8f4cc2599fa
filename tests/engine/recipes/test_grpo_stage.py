"""The GRPO stage: bad input is refused before anything starts, evaluation scores hand-made completions, and a
two-step run on the demo student emits reward, KL and sample events in order and changes the weights."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import torch

from engine.models.cards import front_matter
from engine.core.context import EngineError, RunContext
from engine.contract.protocol import EventWriter
from engine.recipes import grpo
from engine.contract.runs import RunPaths
from engine.contract.spec import DataSpec, GRPOSpec, GRPOStage, RewardSpec, RunSpec, TrainSpec

REWARDS = [RewardSpec("format_lenient", 0.2), RewardSpec("length", 0.5), RewardSpec("answer_correct", 1.0)]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    """A private data dir with the demo kit, and a copy of the demo student that often ends its answers early
    (its end-of-turn embedding points along its typical hidden state), so completion lengths — and with them the
    length reward — differ inside a group and GRPO has a non-zero advantage to learn from in two steps."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.demo.kit import ensure_demo_kit

    home = tmp_path_factory.mktemp("grpo-home")
    old_home, old_threads = os.environ.get("COMPRESSION_STUDIO_HOME"), torch.get_num_threads()
    os.environ["COMPRESSION_STUDIO_HOME"] = str(home)
    torch.set_num_threads(1)  # a 0.3 M-parameter model: threads only add contention on a busy 2-core machine
    kit = ensure_demo_kit()
    model = AutoModelForCausalLM.from_pretrained(kit.student_dir)
    tokenizer = AutoTokenizer.from_pretrained(kit.student_dir)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 3 + 4?"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        hidden = model(**ids, output_hidden_states=True).hidden_states[-1][0].mean(0)  # [H]
        model.get_output_embeddings().weight[tokenizer.eos_token_id] = hidden * 5.0 / hidden.pow(2).sum()
    model.save_pretrained(home / "student-eos")
    tokenizer.save_pretrained(home / "student-eos")
    yield home
    torch.set_num_threads(old_threads)
    if old_home is None:
        os.environ.pop("COMPRESSION_STUDIO_HOME", None)
    else:
        os.environ["COMPRESSION_STUDIO_HOME"] = old_home


def _spec(model: str, *, data: DataSpec | None = None, steps: int = 2, **grpo_settings) -> RunSpec:
    settings = dict(num_generations=4, max_completion_length=16, beta=0.1, sample_every=1,
                    rewards=[RewardSpec(r.name, r.weight) for r in REWARDS],
                    length_range=[4, 12])
    settings.update(grpo_settings)
    stage = GRPOStage(name="grpo", model=model, max_eval_samples=4,
                      train=TrainSpec(max_steps=steps, batch_size=8, learning_rate=3e-3, logging_steps=1,
                                      warmup_ratio=0.0, scheduler="constant"),
                      grpo=GRPOSpec(**settings))
    return RunSpec(name="grpo-test", data=data or DataSpec(preset="demo_reasoning", max_samples=80, seed=1),
                   stages=[stage], device="cpu")


def _ctx(spec: RunSpec, root: Path | None) -> tuple[RunContext, io.StringIO]:
    stream = io.StringIO()
    ctx = RunContext(spec=spec, stage=spec.stages[0], paths=RunPaths(root) if root else None,
                     events=EventWriter("test", stream=stream), device="cpu")
    return ctx, stream


def _reload_the_saved_model(model_dir: Path, tmp_path: Path, home: Path):
    """The saved model, checked to travel: generation cache back on, a card naming the model without this machine's
    paths."""
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(model_dir)
    assert reloaded.config.use_cache is True and reloaded.generation_config.use_cache is True
    card = (model_dir / "README.md").read_text()
    meta = front_matter(card)
    assert meta["base_model"] == "student-eos" and meta["datasets"] == ["compression-studio-demo-reasoning"]
    assert {"grpo", "reinforcement-learning"} <= set(meta["tags"]) and meta["pipeline_tag"] == "text-generation"
    assert str(tmp_path) not in card and str(home) not in card and "grpo/correct_after" in card
    return reloaded


def test_two_step_run_emits_rewards_kl_and_samples_in_order_and_changes_weights(home: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    source = str(home / "student-eos")
    ctx, stream = _ctx(_spec(source), tmp_path / "run")
    result = grpo.run_stage(ctx)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)

    train_metrics = [e["data"] for e in events if e["type"] == "metric" and "grpo/reward" in e["data"]["values"]]
    assert [m["step"] for m in train_metrics] == [1, 2]
    for metric in train_metrics:
        values = metric["values"]
        for key in ("grpo/kl", "grpo/completion_length", "train/loss", "train/lr", "grpo/reward/format_lenient",
                    "grpo/reward/length", "grpo/reward/answer_correct"):
            assert key in values, key
        assert 0.0 <= values["grpo/reward/length"] <= 1.0 and values["grpo/completion_length"] <= 16
    samples = [e["data"] for e in events if e["type"] == "sample"]
    assert [s["step"] for s in samples] == [1, 2]
    assert set(samples[0]["rewards"]) == {"format_lenient", "length", "answer_correct"}
    assert "<answer></answer>" in samples[0]["prompt"] and isinstance(samples[0]["completion"], str)
    # an untrained model never writes the template: the user is told to train on chain-of-thought data first
    warnings = [e["data"]["message"] for e in events if e["type"] == "log" and e["data"]["level"] == "warning"]
    assert any("none of the 4 held-out prompts in the <think>/<answer> template" in w for w in warnings), warnings
    kinds = [(e["type"], e["data"].get("step")) for e in events if e["type"] in ("metric", "sample")]
    assert kinds[0] == ("metric", 0)  # the held-out evaluation before training comes first
    steps = [step for _, step in kinds]
    assert steps == sorted(steps)  # samples and metrics advance together, never backwards

    assert set(result.scores) >= {"grpo/correct_before", "grpo/correct_after", "grpo/rougeL_before",
                                  "grpo/rougeL_after", "grpo/format_before", "grpo/format_after"}
    report = json.loads((ctx.work_dir / "grpo_eval.json").read_text())
    assert report["held_out"] == 4 and report["before"]["n"] == 4 and "correct" in report["after"]
    run_eval = json.loads(ctx.paths.eval_json.read_text())["grpo"]["grpo"]  # the run's evaluation, by stage
    assert run_eval["before"] == report["before"] and run_eval["after"] == report["after"]
    assert "| correctness (answers + tests) |" in ctx.paths.eval_md.read_text()

    reloaded = _reload_the_saved_model(result.model_dir, tmp_path, home)

    before = AutoModelForCausalLM.from_pretrained(source).state_dict()
    after = reloaded.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) >= len(before) // 2, changed


def test_score_completions_counts_answers_and_tests() -> None:
    records = [{"answer": "7", "tests": None, "response": "3 + 4 = 7.", "category": "arithmetic"},
               {"answer": None, "tests": [{"input": "2\n", "output": "4\n"}], "response": "print(int(input())*2)",
                "category": "code"},
               {"answer": "5", "tests": None, "response": "5", "category": "arithmetic"}]
    completions = ["<think>3 plus 4 makes 7.</think><answer>7</answer>",
                   "<think>Read n and print twice n.</think><answer>print(int(input()) * 2)</answer>",
                   "<answer>6</answer>"]
    scores = grpo.score_completions(records, completions)
    assert scores["correct"] == pytest.approx(2 / 3) and scores["format"] == pytest.approx(2 / 3)
    assert scores["answers_correct"] == 0.5 and scores["tests_passed"] == 1.0
    assert scores["correct/arithmetic"] == 0.5 and scores["correct/code"] == 1.0
    assert scores["rougeL"] > 0.5


def test_reward_recorder_keeps_the_latest_batch() -> None:
    recorder = grpo.RewardRecorder()

    def double(prompts, completions, **kwargs):
        return [2.0 * len(c[0]["content"]) for c in completions]

    wrapped = recorder.wrap(double)
    assert wrapped.__name__ == "double"
    prompts = [[{"role": "user", "content": "Q1"}]]
    wrapped(prompts, [[{"role": "assistant", "content": "abc"}]])
    assert recorder.sample() == {"prompt": "Q1", "completion": "abc", "rewards": {"double": 6.0}}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("change,message", [
    ({"rewards": [RewardSpec("code_tests")]}, "code_tests reward needs records with tests"),
    ({"template": "Solve this: {prompt}"}, "<answer></answer>"),
    ({"num_generations": 3}, "multiple of grpo.num_generations"),
])
def test_bad_settings_are_refused_before_anything_starts(home: Path, tmp_path: Path, change: dict,
                                                         message: str) -> None:
    data = _write_jsonl(tmp_path / "qa.jsonl", [{"instruction": f"What is {i} + 1?", "response": str(i + 1),
                                                 "answer": str(i + 1)} for i in range(20)])
    spec = _spec("student", data=DataSpec(preset="local", path=str(data)), **change)
    ctx, _ = _ctx(spec, None)
    with pytest.raises(EngineError, match=message):
        grpo.validate(ctx)


def test_unknown_reward_and_missing_model_are_refused(home: Path, tmp_path: Path) -> None:
    spec = _spec("student")
    spec.stages[0].grpo.rewards[0].name = "vibes"  # past the spec's own check, as a hand-built spec could be
    with pytest.raises(EngineError, match="unknown reward 'vibes'"):
        grpo.validate(_ctx(spec, None)[0])
    with pytest.raises(EngineError, match="does not exist"):
        grpo.validate(_ctx(_spec(str(tmp_path / "no-such-model")), None)[0])


def test_pipeline_preflight_refuses_code_tests_on_data_without_tests(home: Path, tmp_path: Path) -> None:
    from engine.runner.pipeline import preflight

    data = _write_jsonl(tmp_path / "qa.jsonl", [{"instruction": "Say hi.", "response": "hi", "answer": "hi"}] * 10)
    spec = _spec("student", data=DataSpec(preset="local", path=str(data)), rewards=[RewardSpec("code_tests")])
    stream = io.StringIO()
    with pytest.raises(EngineError, match="code_tests reward needs records with tests"):
        preflight(spec, "cpu", EventWriter("test", stream=stream), {})
    assert "sample" not in stream.getvalue() and "metric" not in stream.getvalue()


def test_qlora_run_trains_adapters_and_saves_a_plain_merged_model(home: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    source = str(home / "student-eos")
    spec = _spec(source, steps=2, quantized_base=True)
    spec.stages[0].train.lora.r, spec.stages[0].train.lora.alpha = 4, 8
    spec.stages[0].max_eval_samples = 2
    ctx, stream = _ctx(spec, tmp_path / "run")
    result = grpo.run_stage(ctx)
    assert not (result.model_dir / "adapter_config.json").exists()
    reloaded = _reload_the_saved_model(result.model_dir, tmp_path, home)

    before = AutoModelForCausalLM.from_pretrained(source).state_dict()
    after = reloaded.state_dict()
    assert set(after) == set(before)  # plain transformers weights, LoRA merged in
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # the adapters learned (length varies inside a group, so advantages are not all zero) and were merged into
    # every adapted linear layer of the full-precision base; embeddings and norms are untouched
    assert {k for k in before if k.endswith("proj.weight")} == changed, sorted(changed)
    assert '"type": "sample"' in stream.getvalue()


def test_cancel_stops_at_the_next_step_after_a_checkpoint(home: Path, tmp_path: Path) -> None:
    from engine.core.context import StageCancelled

    spec = _spec(str(home / "student-eos"), steps=5, max_completion_length=8)
    spec.stages[0].max_eval_samples = 1
    ctx, stream = _ctx(spec, tmp_path / "run")
    ctx.events.listeners.append(lambda event: event.type == "sample" and ctx.cancel.set())
    with pytest.raises(StageCancelled):
        grpo.run_stage(ctx)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["data"]["step"] for e in events if e["type"] == "sample"] == [1]
    assert any(e["type"] == "artifact" and e["data"]["kind"] == "checkpoint" for e in events)
    assert not (ctx.output_dir / "config.json").exists()


def test_code_tests_are_refused_without_a_kernel_sandbox_unless_allowed(home: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.rewards import sandbox

    rows = [{"instruction": f"Print {i}.", "response": f"print({i})", "tests": [{"input": "", "output": str(i)}]}
            for i in range(20)]
    data = _write_jsonl(tmp_path / "code.jsonl", rows)
    spec = _spec("student", data=DataSpec(preset="local", path=str(data)), rewards=[RewardSpec("code_tests")])
    grpo.validate(_ctx(spec, None)[0])  # this machine has a kernel sandbox
    monkeypatch.setattr(sandbox, "mechanism", lambda: "none")
    with pytest.raises(EngineError, match="no kernel sandbox.*grpo.allow_unsandboxed_code"):
        grpo.validate(_ctx(spec, None)[0])
    spec.stages[0].grpo.allow_unsandboxed_code = True
    grpo.validate(_ctx(spec, None)[0])
