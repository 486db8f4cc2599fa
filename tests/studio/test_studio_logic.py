"""The studio's Qt-free logic: metric grouping and buffers, event folding, wizard specs, history formatting."""
from __future__ import annotations

import numpy as np
import pytest

from engine.contract.metric_names import metric_group
from engine.contract.model_info import ModelInfo, kd_compatibility
from engine.contract.protocol import Event
from engine.contract.spec import SpecError, updated
from studio.model.history_data import key_scores
from studio.model.run_state import MetricSeries, RunState, format_eta
from studio.model.wizard_model import METHODS, WizardChoices, build_spec, parse_learning_rates

pytestmark = pytest.mark.usefixtures("home")


@pytest.mark.parametrize("name, group", [
    ("train/loss", "loss"), ("kd/ce", "loss"), ("kd/divergence", "loss"), ("grpo/reward", "reward"),
    ("grpo/reward/format_strict", "reward"), ("grpo/kl", "kl"), ("train/lr", "lr"),
    ("perf/tokens_per_s", "throughput"), ("eval/rougeL", "eval"), ("eval/ce", "loss"), ("eval/kd_loss", "loss"),
    ("grpo/completion_length", "length"),
    ("grpo/correct_before", "eval"), ("grpo/rougeL_after", "eval"), ("train/grad_norm", "grad"),
    ("quant/rougeL_retention", "eval"), ("quant/size_ratio", "eval")])
def test_metric_groups_follow_prefixes(name, group):
    assert metric_group(name) == group


def test_series_grows_past_capacity_and_smooths_incrementally():
    s = MetricSeries(capacity=4)
    values = np.random.default_rng(0).normal(size=1000)
    for i, v in enumerate(values):
        s.append(i, v)
    assert s.size == 1000 and np.array_equal(s.y, values)
    ema = s.smoothed(0.9)
    expected, prev = [], values[0]
    for v in values:
        prev = 0.9 * prev + 0.1 * v
        expected.append(prev)
    assert np.allclose(ema, expected)
    s.append(1000, 5.0)  # only the new point is computed, with the same result as from scratch
    assert s.smoothed(0.9)[-1] == pytest.approx(0.9 * expected[-1] + 0.5)
    assert s.nearest(10.4) == (10.0, values[10])


def test_run_state_folds_events():
    state = RunState()
    events = [Event("hello", {}, "r1", 1), Event("status", {"state": "running", "stage": "kd"}, "r1", 2),
              Event("metric", {"stage": "kd", "step": 3, "values": {"kd/ce": 1.5, "kd/divergence": None}}, "r1", 3),
              Event("progress", {"stage": "kd", "step": 3, "total": 6, "fraction": 0.5, "eta_s": 65}, "r1", 4),
              Event("sample", {"stage": "grpo", "step": 5, "prompt": "p", "completion": "c",
                               "rewards": {"answer_correct": 1.0}}, "r1", 5),
              Event("error", {"message": "boom"}, "r1", 6), Event("done", {"status": "failed"}, "r1", 7)]
    for e in events:
        state.apply(e)
    assert state.run_id == "r1" and state.state == "failed" and state.stage == "kd"
    assert list(state.metrics.series) == ["kd · kd/ce"]  # the null divergence is not plotted
    assert state.progress["fraction"] == 0.5 and state.samples[0].rewards == {"answer_correct": 1.0}
    assert state.last_error == "boom" and state.new_log_lines(0) == ["[error] boom"]
    assert format_eta(65) == "1:05" and format_eta(None) == "—"


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_builds_a_valid_spec(method):
    spec = build_spec(WizardChoices(method=method))
    names = [s.name for s in spec.stages]
    assert len(names) == len(set(names))
    if method in ("token_kd", "sequence_kd", "on_policy_kd"):
        assert names == ["teacher_sft", "student_sft", "student_kd", "eval"]
        assert spec.stage("student_kd").distill.method == {"token_kd": "token", "sequence_kd": "sequence",
                                                            "on_policy_kd": "on_policy"}[method]
        assert spec.stage("eval").models == {"teacher": "teacher_sft", "sft_student": "student_sft",
                                             "kd_student": "student_kd"}
    if method == "pipeline":
        assert names == ["teacher_sft", "student_sft", "student_kd", "grpo", "quantize", "eval"]
        assert spec.stage("grpo").model == "student_kd" and spec.stage("quantize").model == "grpo"


def test_learning_rate_lists_and_refusals():
    assert parse_learning_rates("1e-4, 3e-4 5e-4") == [1e-4, 3e-4, 5e-4]
    with pytest.raises(SpecError, match="'fast' is not a number"):
        parse_learning_rates("1e-4, fast")
    with pytest.raises(SpecError, match="alpha"):
        updated(WizardChoices().distill, {"alpha": 1.5}, "distill")  # the choices hold only valid sub-specs


def test_compatibility_and_scores_sentences():
    assert "token-level KD" in kd_compatibility(ModelInfo("t", vocab_size=10, vocab_digest="a"),
                                                ModelInfo("s", vocab_size=10, vocab_digest="a"))
    assert "sequence-level" in kd_compatibility(ModelInfo("t", vocab_size=10, vocab_digest="a"),
                                                ModelInfo("s", vocab_size=12, vocab_digest="b"))
    text = key_scores({"eval/kd_student/rougeL": 0.5, "eval/kd_student/retention": 0.9, "note": "x"})
    assert text == "kd_student retention 90.0 %, kd_student rougeL 0.500"
    grpo = {"grpo/grpo/rougeL_after": 0.394, "grpo/grpo/rougeL_before": 0.374, "grpo/grpo/correct_before": 0.267,
            "grpo/grpo/correct_after": 0.317, "grpo/grpo/format_after": 0.965}
    assert key_scores(grpo) == ("grpo grpo correct_after 0.317, grpo grpo correct_before 0.267, "
                                "grpo grpo rougeL_after 0.394")
    drafted = {"teacher/rougeL": 0.5, "student_kd/rougeL": 0.45, "student_kd/retention": 0.9,
               "student_kd/draft_acceptance": 0.612}  # the evaluation's headline: acceptance right after retention
    assert key_scores(drafted) == ("student_kd retention 90.0 %, student_kd draft acceptance 61.2 %, "
                                   "student_kd rougeL 0.450")


def test_no_display_gets_a_sentence_instead_of_a_qt_abort():
    from studio.display_check import display_problem

    problem = display_problem({}, platform="linux")
    assert problem and "xvfb-run compression-studio" in problem
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, platform="linux") is None
    assert display_problem({}, platform="darwin") is None


def test_the_app_exits_2_with_that_sentence_when_there_is_no_display(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["COMPRESSION_STUDIO_HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-m", "studio.app"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no display" in out.stderr and "Traceback" not in out.stderr
