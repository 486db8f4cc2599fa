"""train.precision: mixed precision keeps fp32 master weights (so small AdamW updates survive), pure bf16 loses
them; what each mode resolves to per device; the modes a device cannot do are refused in one sentence."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch

from engine.core.context import EngineError, RunContext
from engine.training.precision import resolve_precision
from engine.contract.protocol import EventWriter
from engine.contract.spec import RunSpec, SpecError, build

sys.path.insert(0, str(Path(__file__).parents[1]))
from quant_helpers import make_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("prec") / "model", hidden=32, layers=1)


def _rows(n: int = 64) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        ids = torch.randint(3, 300, (16,), generator=g).tolist()
        rows.append({"input_ids": ids, "attention_mask": [1] * 16, "labels": [-100] * 4 + ids[4:]})
    return rows


def _ctx(tiny: Path, precision: str) -> tuple[RunContext, io.StringIO]:
    spec = build(RunSpec, {"student": {"source": str(tiny)}, "device": "cpu", "stages": [
        {"kind": "sft", "name": "sft", "train": {"precision": precision, "learning_rate": 1e-5, "max_steps": 20,
                                                 "batch_size": 4, "warmup_ratio": 0.0, "scheduler": "constant",
                                                 "save_steps": 1000}}]})
    out = io.StringIO()
    return RunContext(spec=spec, stage=spec.stages[0], paths=None, events=EventWriter(stream=out), device="cpu"), out


def _update(tiny: Path, precision: str, tmp_path: Path) -> tuple[torch.Tensor, str]:
    """The weight change of 20 AdamW steps at lr 1e-5 through the engine's own loading and TrainingArguments."""
    from datasets import Dataset
    from transformers import Trainer

    from engine.training_data.collate import pad_collator
    from engine.training.support import load_trainable, training_arguments

    ctx, out = _ctx(tiny, precision)
    model = load_trainable(ctx, ctx.spec.student)
    before = torch.cat([p.detach().float().flatten().clone() for p in model.parameters()])
    args = training_arguments(ctx, ctx.stage.train, 1e-5, tmp_path / precision, save_strategy="no")
    seen = []
    hook = model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    Trainer(model=model, args=args, train_dataset=Dataset.from_list(_rows()), data_collator=pad_collator(0)).train()
    hook.remove()
    after = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    return after - before, f"{model.dtype} {seen[0]} {out.getvalue()}"


def test_mixed_precision_keeps_small_updates_and_pure_bf16_loses_them(tiny, tmp_path):
    fp32, info32 = _update(tiny, "fp32", tmp_path)
    mixed, info_mixed = _update(tiny, "bf16-mixed", tmp_path)
    pure, info_pure = _update(tiny, "bf16-pure", tmp_path)
    assert info32.startswith("torch.float32 torch.float32")
    assert info_mixed.startswith("torch.float32 torch.bfloat16")  # fp32 master weights, bf16 matmuls
    assert info_pure.startswith("torch.bfloat16 torch.bfloat16")
    mixed_error = ((mixed - fp32).norm() / fp32.norm()).item()
    pure_error = ((pure - fp32).norm() / fp32.norm()).item()
    assert (fp32 != 0).float().mean() > 0.95 and (mixed != 0).float().mean() > 0.95
    assert mixed_error < 0.1, mixed_error  # autocast noise only
    assert pure_error > 0.5, pure_error  # most updates rounded away
    assert (pure == 0).float().mean() > 0.5
    events = [json.loads(line) for line in info_pure.split(" ", 2)[2].splitlines()]
    warnings = [e for e in events if e["type"] == "log" and e["data"]["level"] == "warning"]
    assert len(warnings) == 1 and "bf16-pure" in warnings[0]["data"]["message"]


def test_what_each_mode_resolves_to(monkeypatch):
    assert resolve_precision("auto", "cpu").name == "fp32"
    assert resolve_precision("auto", "mps").name == "fp32"
    plan = resolve_precision("bf16-mixed", "cpu")
    assert plan.weights == torch.float32 and plan.trainer_flags == {"bf16": True, "fp16": False}
    assert resolve_precision("bf16-pure", "cpu").trainer_flags == {"bf16": False, "fp16": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda").name == "bf16-mixed"
    fp16 = resolve_precision("fp16-mixed", "cuda")
    assert fp16.weights == torch.float32 and fp16.trainer_flags == {"bf16": False, "fp16": True}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a T4 or V100
    assert resolve_precision("auto", "cuda").name == "fp16-mixed"
    with pytest.raises(EngineError, match="sft.train.precision is bf16-mixed, but this GPU does not support"):
        resolve_precision("bf16-mixed", "cuda", "sft.train.precision")


def test_impossible_precision_is_refused_before_anything_is_created(tiny):
    with pytest.raises(SpecError, match="train.precision"):
        build(RunSpec, {"stages": [{"kind": "sft", "train": {"precision": "fp8"}}]})
    with pytest.raises(EngineError, match="fp16-mixed, which needs a CUDA GPU") as err:
        resolve_precision("fp16-mixed", "cpu", "sft.train.precision")
    assert "\n" not in str(err.value)
    from engine.runner.pipeline import preflight

    spec = build(RunSpec, {"student": {"source": str(tiny)}, "device": "cpu", "data": {"preset": "demo"},
                           "stages": [{"kind": "sft", "name": "s", "train": {"precision": "fp16-mixed"}}]})
    with pytest.raises(EngineError, match="s.train.precision is fp16-mixed"):
        preflight(spec, "cpu", EventWriter(stream=io.StringIO()), {})  # runs before any run folder exists
