"""Reports sized to the machine (issue 22): the sample count follows the device's time budget (measured on the
first answers, said in the plan), the 4-bit report publishes each part as it is measured, and a cancel keeps
what was measured, marked as such."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from engine.contract.spec import GenerationSpec, QuantizeSpec
from engine.evaluation.budget import MIN_SAMPLES, PROBE_ANSWERS, budget_s, plan_samples

sys.path.insert(0, str(Path(__file__).parents[1]))
from quant_helpers import make_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")
WORDS = ("foxes", "dogs", "models", "bits", "Paris", "code", "numbers", "weights", "cats", "trees", "rain", "salt")


def test_budget_defaults_by_device_and_the_stage_overrides_it():
    assert budget_s(0, "cpu") == 600 and budget_s(0, "cuda") is None and budget_s(0, "cuda:1") is None
    assert budget_s(2.5, "cuda") == 150


def test_the_sample_count_fits_the_budget_and_the_plan_says_so():
    # 2 answers took 40 s (20 s each, a 0.5 B model on 2 cores): 200 samples × 2 models would take 8,000 s
    plan = plan_samples(asked=200, probe_s=40.0, probed=2, models=2, budget=600.0)
    assert plan.per_answer_s == 20.0 and plan.chosen == 15 and plan.scaled  # 15 × 2 × 20 s = 600 s
    assert plan.eta_s == pytest.approx(20.0 * (15 * 2 - 2))  # the probe's two answers are kept
    sentence = plan.sentence(2, "cpu")
    assert sentence.startswith("quality: 15 of 200 held-out samples × 2 model(s), about 9 min")
    assert "all 200 would take about 133 min" in sentence and "eval_minutes" in sentence
    assert plan_samples(200, 40.0, 2, 2, 60.0).chosen == MIN_SAMPLES  # never below a useful few
    fast = plan_samples(200, 0.02, 2, 2, 600.0)
    assert fast.chosen == 200 and not fast.scaled and "of 200" not in fast.sentence(2, "cpu")
    assert plan_samples(200, 40.0, 2, 2, None).chosen == 200  # no budget (a GPU): what was asked


def test_the_first_full_batch_revises_a_plan_the_probe_made_too_cautious(monkeypatch):
    """Two answers alone cost more each than sixteen in a batch (measured here on the demo student: 8.1 s vs
    2.0 s per answer): the plan is revised after the first full batch and announced again."""
    from engine.evaluation import budget

    clock = [0.0]
    monkeypatch.setattr(budget.time, "perf_counter", lambda: clock[0])
    calls, plans = [], []

    def answer(records):  # a batch costs 1 s plus 0.1 s per answer
        calls.append(len(records))
        clock[0] += 1.0 + 0.1 * len(records)
        return [r["id"] for r in records]

    records = [{"id": i} for i in range(200)]
    chosen, answers = budget.answer_in_two_parts(answer, records, 2, 60.0, plans.append, batch_size=16)
    assert [p.chosen for p in plans] == [50, 184]  # 0.6 s per answer alone, 0.1625 s in a batch of 16
    assert plans[1].measured_on == "a batch of 16" and "measured on a batch of 16" in plans[1].sentence(2, "cpu")
    assert calls == [2, 16, 166] and answers == list(range(184)) and chosen == records[:184]
    assert plans[1].eta_s == pytest.approx(0.1625 * (184 * 2 - 18))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_a_report_over_budget_uses_fewer_samples_and_publishes_each_part(tiny, tmp_path):
    from engine.quantization.four_bit import quantize_model
    from engine.quantization.report import quantization_report, report_markdown

    q4 = quantize_model(str(tiny), tmp_path / "q4", QuantizeSpec(), "cpu")
    records = [{"instruction": f"Say something about {w}.", "response": w} for w in WORDS]
    published, plans, answered = [], [], []
    report = quantization_report(tiny, q4, records, "local", GenerationSpec(max_new_tokens=4, batch_size=4), "cpu",
                                 measure=False, budget=1e-9, publish=lambda r: published.append(json.loads(
                                     json.dumps(r))), announce=plans.append,
                                 on_answer=lambda done, total: answered.append((done, total)))
    assert [p["measured"] for p in published] == [["size"], ["size"], ["size", "quality"]]
    sizes = published[0]
    assert sizes["original"]["disk_bytes"] > sizes["quantized"]["disk_bytes"] > 0
    # like with like: the tensors both keep unquantized (a float32 source: the same bytes on both sides)
    assert sizes["original"]["full_precision_bytes"] == sizes["quantized"]["full_precision_bytes"] > 0
    assert "scores" not in published[1]["original"] and published[1]["samples"] == MIN_SAMPLES
    assert plans[0].asked == len(WORDS) and plans[0].chosen == MIN_SAMPLES
    assert report["samples"] == MIN_SAMPLES and report["samples_asked"] == len(WORDS)
    assert report["original"]["scores_detail"]["n"] == report["quantized"]["scores_detail"]["n"] == MIN_SAMPLES
    assert answered[-1] == (2 * MIN_SAMPLES, 2 * MIN_SAMPLES) and answered[0][0] <= PROBE_ANSWERS
    table = report_markdown(report)
    assert f"quality: {MIN_SAMPLES} of {len(WORDS)} held-out samples" in table
    assert "not measured: speed and memory." in table  # measure=False: the table says so, no "—" left unexplained


def test_a_cancelled_quantize_stage_keeps_the_sizes_it_measured(tiny, tmp_path, monkeypatch):
    from engine.contract.protocol import EventWriter
    from engine.contract.runs import RunStore
    from engine.contract.spec import RunSpec, build, dump_spec
    from engine.core.context import RunContext, StageCancelled
    from engine.recipes.quantize import run_stage

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"About {w}?", "response": w}) + "\n" for w in WORDS))
    spec = build(RunSpec, {"name": "q", "student": {"source": str(tiny)}, "device": "cpu",
                           "data": {"preset": "local", "path": str(data), "test_fraction": 0.5},
                           "stages": [{"kind": "quantize", "name": "q4"}]})
    paths = RunStore(tmp_path / "runs").create("q", dump_spec(spec))
    events = EventWriter(stream=io.StringIO())
    ctx = RunContext(spec, spec.stages[0], paths, events, device="cpu")
    # the person presses cancel as soon as the sizes are shown (the first eval artifact)
    events.listeners.append(lambda e: e.type == "artifact" and e.data["kind"] == "eval" and ctx.cancel.set())
    with pytest.raises(StageCancelled):
        run_stage(ctx)
    report = json.loads(paths.eval_json.read_text())["quantization"]["q4"]
    assert report["state"] == "cancelled" and report["measured"] == ["size"]
    assert report["original"]["disk_bytes"] > report["quantized"]["disk_bytes"] > 0
    assert "rss_bytes" not in report["quantized"]
    assert "not measured: speed and memory, quality (cancelled)" in paths.eval_md.read_text()


def _evaluate_ctx(tmp_path, monkeypatch, **stage):
    from engine.contract.protocol import EventWriter
    from engine.contract.runs import RunStore
    from engine.contract.spec import RunSpec, build, dump_spec
    from engine.core.context import RunContext

    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "home"))
    spec = build(RunSpec, {"name": "e", "teacher": {"source": "demo:teacher"}, "student": {"source": "demo:student"},
                           "device": "cpu", "data": {"preset": "demo", "max_samples": 120, "test_fraction": 0.2},
                           "stages": [{"kind": "evaluate", "name": "eval", "models": {"teacher": "teacher",
                                                                                    "student": "student"},
                                       "max_eval_samples": 12, "generation": {"max_new_tokens": 8}, **stage}]})
    paths = RunStore(tmp_path / "runs").create("e", dump_spec(spec))
    out = io.StringIO()
    return RunContext(spec, spec.stages[0], paths, EventWriter(stream=out), device="cpu"), out


def test_the_evaluation_says_sizes_first_then_its_plan_and_scales_to_the_budget(tmp_path, monkeypatch):
    from engine.recipes.evaluate import run_stage

    ctx, out = _evaluate_ctx(tmp_path, monkeypatch, eval_minutes=1e-9)  # no device is that fast: scaled
    run_stage(ctx)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    first_answer = next(i for i, e in enumerate(events) if e["type"] == "progress")
    sizes = [e["data"] for e in events[:first_answer] if e["type"] == "metric"]
    assert sizes and sizes[0]["model"] == "teacher" and sizes[0]["values"]["eval/parameters"] > 0
    plan = next(e["data"]["message"] for e in events if e["type"] == "status"
                and e["data"]["message"].startswith("quality:"))
    assert plan.startswith(f"quality: {MIN_SAMPLES} of 12 held-out samples × 2 model(s)")
    evaluation = json.loads(ctx.paths.eval_json.read_text())
    assert evaluation["n"] == MIN_SAMPLES and evaluation["evaluation_state"] == "complete"
    assert evaluation["models"]["student"]["n"] == evaluation["models"]["teacher"]["n"] == MIN_SAMPLES
    assert "retention" in evaluation["models"]["student"] and evaluation["models_pending"] == []
    assert f"quality: {MIN_SAMPLES} of 12" in ctx.paths.eval_md.read_text()


def test_a_cancelled_evaluation_keeps_the_models_it_measured(tmp_path, monkeypatch):
    from engine.core.context import StageCancelled
    from engine.recipes.evaluate import run_stage

    ctx, _ = _evaluate_ctx(tmp_path, monkeypatch)

    def cancel_after_the_teacher(event) -> None:
        if event.type == "sample" and event.data.get("model") == "teacher":
            ctx.cancel.set()

    ctx.events.listeners.append(cancel_after_the_teacher)
    with pytest.raises(StageCancelled):
        run_stage(ctx)
    evaluation = json.loads(ctx.paths.eval_json.read_text())
    assert evaluation["evaluation_state"] == "cancelled" and list(evaluation["models"]) == ["teacher"]
    assert evaluation["models_pending"] == ["student"] and evaluation["models"]["teacher"]["rougeL"] >= 0
    assert "Not measured (cancelled): student." in ctx.paths.eval_md.read_text()
