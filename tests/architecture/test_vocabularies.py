"""Every choice list of the contract (engine/contract/vocabulary.py) has its implementation, and nothing more:
a value added to a vocabulary without its code, or code for a value the spec refuses, fails here by name."""
from __future__ import annotations

import pytest

from engine.contract import vocabulary as v


def test_each_distributed_strategy_has_its_accelerate_flags():
    from engine.runner.launch import _STRATEGY_FLAGS, accelerate_command

    assert tuple(_STRATEGY_FLAGS) == v.DISTRIBUTED_STRATEGIES
    assert "--config_file" in accelerate_command("r", 2, f"{v.DISTRIBUTED_CONFIG_PREFIX}/tmp/a.yaml", port=1)


def test_each_precision_has_a_plan_and_each_reward_a_function():
    from engine.rewards.functions import build_reward_functions
    from engine.contract.spec import RewardSpec
    from engine.training.precision import _PLANS

    assert {"auto", *_PLANS} == set(v.PRECISIONS)
    functions = build_reward_functions([RewardSpec(name) for name in v.REWARDS])
    assert [f.__name__ for f in functions] == list(v.REWARDS)


@pytest.mark.parametrize("kind", v.DIVERGENCES)
def test_each_divergence_is_zero_on_equal_distributions_and_positive_otherwise(kind):
    import torch

    from engine.training.losses import divergence

    p, q = torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([[0.0, 1.0, 0.5]])
    assert divergence(p, p, kind).abs().item() < 1e-6 and divergence(p, q, kind).item() > 0


def test_the_demo_presets_are_the_demo_kits_and_every_gguf_format_is_written():
    from engine.export.gguf import FORMATS

    assert v.DEMO_PRESETS == ("demo", "demo_reasoning")
    assert FORMATS == v.GGUF_FORMATS and set(v.GGUF_FORMAT_NOTES) == set(v.GGUF_FORMATS)
    assert v.DTYPES == ("auto", *v.COMPUTE_DTYPES)
