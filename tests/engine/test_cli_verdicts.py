"""The command line says no more than it measured (issue 22): ``quantize`` takes the options ``eval`` has, and
every number it prints keeps its digits (a learning rate of 5e-05 is not 0.000)."""
from __future__ import annotations

from engine.cli import tools
from engine.cli.main import build_parser


def test_quantize_takes_the_evaluation_options(monkeypatch):
    seen = []
    monkeypatch.setattr(tools, "execute", lambda spec: seen.append(spec) or 0)
    args = build_parser().parse_args(["quantize", "demo:student", "--compute-dtype", "bfloat16", "--max-samples",
                                      "12", "--max-new-tokens", "24", "--batch-size", "4", "--test-fraction", "0.2"])
    assert args.func(args) == 0
    stage = seen[0].stages[0]
    assert stage.quantize.compute_dtype == "bfloat16" and stage.max_eval_samples == 12
    assert stage.generation.max_new_tokens == 24 and stage.generation.batch_size == 4
    assert seen[0].data.test_fraction == 0.2
