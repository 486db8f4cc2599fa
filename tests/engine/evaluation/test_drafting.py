"""The student as the teacher's draft (engine/evaluation/drafting.py): assisted greedy output equals plain greedy
output (same and different tokenizers), and the counted acceptance equals a hand-written draft-verify loop."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from engine.contract.spec import GenerationSpec

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["What is 3 + 4?", "Sort: 5, 2, 9", "Reverse the word 'cat'.", "Capital of France?"]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    from engine.demo.kit import ensure_demo_kit

    return ensure_demo_kit(tmp_path_factory.mktemp("kit") / "demo-kit")


def _load(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def _prompts(tokenizer) -> list[str]:
    from engine.training_data.formatting import prompt_texts

    return prompt_texts(tokenizer, [{"instruction": p, "response": ""} for p in PROMPTS], "demo")


def _plain_answers(model, tokenizer, prompts, gen):
    from engine.evaluation.generation import generate_answers

    return generate_answers(model, tokenizer, prompts, gen, "cpu")


def test_assisted_greedy_equals_plain_greedy_same_tokenizer(kit):
    from engine.evaluation.drafting import measure_draft

    teacher, tok = _load(kit.teacher_dir)
    student, student_tok = _load(kit.student_dir)
    report = measure_draft(teacher, tok, student, student_tok, _prompts(tok), GenerationSpec(max_new_tokens=24),
                           "cpu")
    assert report.tokenizers == "same"
    assert report.identical == report.prompts == len(PROMPTS)
    assert report.count.rounds > 0 and 0 <= report.count.accepted <= report.count.proposed
    assert report.plain_tokens == report.drafted_tokens > 0
    assert report.speedup is not None and report.speedup > 0
    entry = report.as_dict()
    assert entry["acceptance"] == round(report.count.accepted / report.count.proposed, 4)


def test_teacher_as_its_own_draft_is_always_accepted(kit):
    from engine.evaluation.drafting import measure_draft

    teacher, tok = _load(kit.teacher_dir)
    report = measure_draft(teacher, tok, copy.deepcopy(teacher), tok, _prompts(tok)[:2],
                           GenerationSpec(max_new_tokens=24), "cpu")
    assert report.count.proposed > 0
    assert report.acceptance == 1.0
    assert report.identical == 2


def test_assisted_greedy_equals_plain_greedy_different_tokenizers(kit):
    """The demo's second teacher (a BPE tokenizer of its own) drafted by the Qwen-tokenized student."""
    from engine.evaluation.drafting import measure_draft, same_tokenizer

    teacher, tok = _load(kit.teacher_bpe_dir)
    student, student_tok = _load(kit.student_dir)
    assert not same_tokenizer(tok, student_tok)
    gen = GenerationSpec(max_new_tokens=16)
    prompts = _prompts(tok)[:3]
    report = measure_draft(teacher, tok, student, student_tok, prompts, gen, "cpu")
    assert report.tokenizers == "different"
    assert report.identical == report.prompts == 3
    assert 0 <= report.count.accepted <= report.count.proposed
    assert report.plain_tokens == report.drafted_tokens


def _reference_counts(teacher, student, ids: list[int], k: int, max_new: int, stops: set[int]) -> tuple[int, int]:
    """(proposed, accepted) by a plain greedy draft-verify loop without caches: the student drafts up to ``k``
    tokens (fewer near the length limit, none past a stop), the teacher keeps the longest prefix equal to its own
    greedy choices plus one token of its own."""
    seq, new, proposed, accepted = list(ids), 0, 0, 0
    with torch.no_grad():
        while new < max_new:
            draft: list[int] = []
            for _ in range(min(k, max_new - new - 1)):
                token = int(student(torch.tensor([seq + draft])).logits[0, -1].argmax())
                draft.append(token)
                if token in stops:
                    break
            choices = teacher(torch.tensor([seq + draft])).logits[0, len(seq) - 1:].argmax(-1).tolist()
            m = 0
            while m < len(draft) and draft[m] == choices[m]:
                m += 1
            valid = (draft[:m] + [choices[m]])[:max_new - new]
            stop_at = next((i for i, t in enumerate(valid) if t in stops), None)
            valid = valid if stop_at is None else valid[:stop_at + 1]
            proposed, accepted = proposed + len(draft), accepted + len(valid) - 1
            seq, new = seq + valid, new + len(valid)
            if stop_at is not None:
                break
    return proposed, accepted


def test_counted_acceptance_equals_a_hand_written_draft_verify_loop(kit):
    from engine.evaluation.drafting import measure_draft
    from engine.evaluation.generation import stop_token_ids
    from engine.training_data.formatting import encode_prompt

    teacher, tok = _load(kit.teacher_dir)
    # a student that agrees with the teacher often: the teacher with its last layer's weights perturbed
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        torch.manual_seed(0)
        for p in student.model.layers[-1].parameters():
            p.mul_(1 + 0.5 * torch.randn_like(p))
    student.generation_config.num_assistant_tokens = 4
    student.generation_config.num_assistant_tokens_schedule = "constant"
    student.generation_config.assistant_confidence_threshold = 0.0
    prompts, max_new = _prompts(tok)[:2], 20
    report = measure_draft(teacher, tok, student, tok, prompts, GenerationSpec(max_new_tokens=max_new), "cpu")
    stops = set(stop_token_ids(teacher, tok))
    expected = [_reference_counts(teacher, student, encode_prompt(tok, p), 4, max_new, stops) for p in prompts]
    assert (report.count.proposed, report.count.accepted) == tuple(map(sum, zip(*expected)))
    assert 0 < report.count.accepted < report.count.proposed  # the example tests both outcomes


def test_draft_prompt_count_sized_to_the_device():
    from engine.evaluation.drafting import DRAFT_PROMPTS, draft_prompt_count

    assert draft_prompt_count(0, "cpu") == DRAFT_PROMPTS["cpu"]
    assert draft_prompt_count(0, "cuda") == DRAFT_PROMPTS["gpu"]
    assert draft_prompt_count(3, "cpu") == 3


def _evaluate_ctx(tmp_path, monkeypatch, student: str = "student", **stage):
    """An evaluation of the demo teacher and ``student`` (a base model, or ``student_sft``: the demo student saved
    as that stage's output of the run, with a model card)."""
    import io
    import shutil

    from engine.contract.protocol import EventWriter
    from engine.contract.runs import RunStore
    from engine.contract.spec import RunSpec, build, dump_spec
    from engine.core.context import RunContext
    from engine.demo.kit import ensure_demo_kit
    from engine.models.cards import model_card

    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "home"))
    evaluate = {"kind": "evaluate", "name": "eval", "models": {"teacher": "teacher", "student": student},
                "max_eval_samples": 4, "generation": {"max_new_tokens": 8}, **stage}
    sft = [{"kind": "sft", "name": "student_sft", "model": "student"}] if student == "student_sft" else []
    spec = build(RunSpec, {"name": "e", "teacher": {"source": "demo:teacher"}, "student": {"source": "demo:student"},
                           "device": "cpu", "data": {"preset": "demo", "max_samples": 60, "test_fraction": 0.2},
                           "stages": [*sft, evaluate]})
    paths = RunStore(tmp_path / "runs").create("e", dump_spec(spec))
    if sft:
        folder = paths.model("student_sft")
        shutil.copytree(ensure_demo_kit().student_dir, folder)
        (folder / "README.md").write_text(model_card("e: student_sft", "demo:student", "SFT.", {}))
    out = io.StringIO()
    return RunContext(spec, spec.stages[-1], paths, EventWriter(stream=out), device="cpu"), out


def test_the_evaluation_measures_each_smaller_model_as_the_reference_draft(tmp_path, monkeypatch):
    import json

    from engine.recipes.evaluate import run_stage

    ctx, out = _evaluate_ctx(tmp_path, monkeypatch, student="student_sft", draft_samples=2)
    result = run_stage(ctx)
    models = json.loads(ctx.paths.eval_json.read_text())["models"]
    assert "draft" not in models["teacher"]  # the reference drafts for nobody
    draft = models["student"]["draft"]
    assert draft["prompts"] == draft["identical"] == 2 and draft["tokenizers"] == "same"
    assert 0 <= draft["accepted"] <= draft["proposed"] and draft["acceptance"] == round(
        draft["accepted"] / draft["proposed"], 4)
    assert draft["speedup"] > 0 and draft["tokens_per_s_plain"] > 0
    metrics = [json.loads(line)["data"] for line in out.getvalue().splitlines() if '"metric"' in line]
    student = next(m["values"] for m in metrics if m.get("model") == "student" and "eval/rougeL" in m["values"])
    assert student["eval/draft_acceptance"] == draft["acceptance"]
    assert student["eval/draft_speedup"] == draft["speedup"]
    assert "draft acceptance" in ctx.paths.eval_md.read_text()
    assert result.summary["models"]["student"]["draft"] == draft
    card = (ctx.paths.model("student_sft") / "README.md").read_text()  # the run's own model: its card says it
    assert f"| draft acceptance (as teacher's draft model) | {100 * draft['acceptance']:.1f} % |" in card


def test_draft_samples_minus_one_turns_the_measurement_off(tmp_path, monkeypatch):
    import json

    from engine.recipes.evaluate import run_stage

    ctx, _ = _evaluate_ctx(tmp_path, monkeypatch, draft_samples=-1)
    run_stage(ctx)
    assert "draft" not in json.loads(ctx.paths.eval_json.read_text())["models"]["student"]


def test_draft_samples_below_minus_one_is_refused_with_the_field_named():
    from engine.contract.errors import SpecError
    from engine.contract.stages import EvaluateStage

    with pytest.raises(SpecError, match="draft_samples"):
        EvaluateStage(name="eval", model="student", draft_samples=-2)


def test_the_eval_command_passes_draft_samples_and_refuses_a_bad_one(monkeypatch, capsys):
    from engine.cli import tools
    from engine.cli.main import build_parser

    seen = []
    monkeypatch.setattr(tools, "execute", lambda spec: seen.append(spec) or 0)
    command = ["eval", "--model", "teacher=demo:teacher", "--model", "student=demo:student", "--draft-samples"]
    args = build_parser().parse_args(command + ["5"])
    assert args.func(args) == 0 and seen[0].stages[0].draft_samples == 5
    args = build_parser().parse_args(command + ["-7"])
    assert args.func(args) != 0 and not seen[1:]
    assert "eval.draft_samples: must be -1 (off)" in capsys.readouterr().err


def test_a_pair_transformers_cannot_draft_with_leaves_the_evaluation_intact(tmp_path, monkeypatch):
    import json

    from engine.recipes.evaluate import run_stage

    def refuse(*args, **kwargs):
        raise ValueError("Assisted decoding requires a cache that can be cropped")

    monkeypatch.setattr("engine.evaluation.drafting.measure_draft", refuse)
    ctx, out = _evaluate_ctx(tmp_path, monkeypatch, draft_samples=2)
    run_stage(ctx)
    report = json.loads(ctx.paths.eval_json.read_text())
    assert report["evaluation_state"] == "complete" and report["models"]["student"]["rougeL"] >= 0
    assert report["models"]["student"]["draft"] == {"error": "Assisted decoding requires a cache that can be cropped"}
    assert "student could not be measured as teacher's draft model" in out.getvalue()
    assert "student could not be measured as a draft: Assisted decoding" in ctx.paths.eval_md.read_text()
