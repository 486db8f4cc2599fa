"""Shared training plumbing: the labelled subset a stage may use, and trainer-log renaming."""
from __future__ import annotations

from engine.core.context import RunContext
from engine.contract.metric_names import rename_metrics
from engine.contract.protocol import EventWriter
from engine.contract.spec import RunSpec, build
from engine.training_data.splits import Splits
from engine.training.support import labelled_split


def _ctx(references: float, seed: int = 0) -> RunContext:
    spec = build(RunSpec, {"data": {"seed": seed}, "stages": [
        {"kind": "sft", "name": "a", "references": references},
        {"kind": "sft", "name": "b", "references": references}]})
    records = [{"id": str(i), "response": f"r{i}"} for i in range(100)]
    return RunContext(spec=spec, stage=spec.stages[0], paths=None, events=EventWriter(),
                      cache={"splits": Splits(train=records, validation=[], test=[])})


def test_references_keep_a_seeded_fraction_shared_by_every_stage():
    ctx = _ctx(0.25)
    labelled, rest = labelled_split(ctx)
    assert len(labelled) == 25 and len(rest) == 75
    assert {r["id"] for r in labelled}.isdisjoint({r["id"] for r in rest})
    ctx.stage = ctx.spec.stages[1]
    assert labelled_split(ctx)[0] == labelled  # the SFT baseline and KD see the same references
    assert labelled_split(_ctx(0.25, seed=1))[0] != labelled
    assert labelled_split(_ctx(1.0)) == (ctx.cache["splits"].train, [])


def test_trainer_logs_get_protocol_names():
    values = rename_metrics({"loss": 1.0, "learning_rate": 1e-3, "epoch": 0.5, "rewards/answer_correct/mean": 0.25,
                             "kl": 0.01, "completions/mean_length": 30.0, "kd/ce": 2.0, "train_runtime": 9.0})
    assert values == {"train/loss": 1.0, "train/lr": 1e-3, "grpo/reward/answer_correct": 0.25, "grpo/kl": 0.01,
                      "grpo/completion_length": 30.0, "kd/ce": 2.0}


def test_validation_cross_entropy_has_one_name_in_sft_and_kd():
    """SFT's eval_loss is the cross-entropy; KDTrainer's is the joint loss, with the cross-entropy beside it."""
    assert rename_metrics({"eval_loss": 3.0, "eval_runtime": 1.0}) == {"eval/ce": 3.0, "eval/runtime": 1.0}
    kd = rename_metrics({"eval_loss": 3.0, "eval_kd/ce": 2.5, "eval_kd/divergence": 3.5})
    assert kd == {"eval/ce": 2.5, "eval/kd_loss": 3.0, "eval/kd_divergence": 3.5}


def test_every_metric_name_constant_has_a_plot_and_trainer_logs_become_them():
    from engine.contract import metric_names as m

    names = {v for k, v in vars(m).items() if k.isupper() and isinstance(v, str) and "/" in v}
    assert {m.TRAIN_LOSS, m.KD_DIVERGENCE, m.EVAL_ROUGE_L, m.PERF_TOKENS_PER_S} <= names
    assert {n: m.metric_group(n) for n in (m.KD_CE, m.KD_DIVERGENCE, m.EVAL_CE, m.TRAIN_LR, m.GRPO_KL)} == {
        m.KD_CE: "loss", m.KD_DIVERGENCE: "loss", m.EVAL_CE: "loss", m.TRAIN_LR: "lr", m.GRPO_KL: "kl"}
    assert not hasattr(m, "METRICS")  # the unread table that mis-described kd/divergence is gone
    assert rename_metrics({"loss": 1.0, "rewards/format_strict/mean": 0.5, "kl": 0.1}) == {
        m.TRAIN_LOSS: 1.0, m.grpo_reward("format_strict"): 0.5, m.GRPO_KL: 0.1}
    assert m.metric_group(m.grpo_held_out("correct", "after")) == "eval"
