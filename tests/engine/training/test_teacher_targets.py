"""Tests of engine.training.teacher_targets and the cached-teacher KDTrainer: one build, reuse without the teacher,
refusal of a cache made for another teacher or other settings, and equality with the live teacher at full k."""
from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers import Qwen2Config, Qwen2ForCausalLM, TrainingArguments

from engine.core.context import EngineError
from engine.contract.spec import DistillSpec
from engine.training_data.collate import pad_collator
from engine.training.kd_trainer import ChunkedSFTTrainer, KDTrainer
from engine.contract.protocol import EventWriter
from engine.contract.spec import ModelSpec
from engine.training.teacher_targets import ensure_targets, store_dir, with_row_numbers

VOCAB = 96
pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(hidden: int, seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden,
                                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                        tie_word_embeddings=True, pad_token_id=0))


def _rows(n: int = 12) -> list[dict]:
    rows = []
    for i in range(n):
        prompt = [3, 10 + i % 4, 4][: 2 + i % 2]
        answer = [(20 + 7 * i + 3 * j) % VOCAB for j in range(3 + i % 3)] + [2]
        ids = prompt + answer
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(prompt) + answer})
    return rows


def _ctx(top_k: int, path: str = "", temperature: float = 1.0) -> SimpleNamespace:
    distill = DistillSpec(temperature=temperature, teacher_cache={"enabled": True, "top_k": top_k, "path": path,
                                                                  "batch_size": 5})
    events = EventWriter(stream=open("/dev/null", "w"))  # closed with the process
    cancel = threading.Event()
    return SimpleNamespace(stage=SimpleNamespace(name="kd", distill=distill), events=events, device="cpu",
                           spec=SimpleNamespace(data=SimpleNamespace(max_length=64)),
                           check_cancel=lambda: cancel.is_set() and 1 / 0)


@pytest.fixture
def teacher_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "home"))
    folder = tmp_path / "teacher"
    _tiny(32, seed=1).save_pretrained(folder)
    return folder


def _load(folder: Path):
    def load():
        load.calls += 1
        return Qwen2ForCausalLM.from_pretrained(folder).eval()
    load.calls = 0
    return load


def test_built_once_then_read_without_the_teacher_and_refused_for_other_settings(teacher_folder: Path) -> None:
    spec = ModelSpec(source=str(teacher_folder))
    data = [Dataset.from_list(_rows(10)), Dataset.from_list(_rows(4))]
    load = _load(teacher_folder)
    first = ensure_targets(_ctx(8), spec, data, load, 0, "tmpl")
    assert load.calls == 1 and first.top_k == 8
    assert first.offsets[-1] == sum(sum(1 for t in r["labels"][1:] if t != -100) for d in data for r in d)
    assert not list(store_dir().glob("*.partial-*"))  # written atomically
    again = ensure_targets(_ctx(8), spec, data, lambda: pytest.fail("the teacher was loaded again"), 0, "tmpl")
    assert again.root == first.root
    # stored targets are the teacher's own top-k log-probabilities, row by row
    teacher = Qwen2ForCausalLM.from_pretrained(teacher_folder).eval()
    row = data[1][2]
    with torch.no_grad():
        lp = teacher(input_ids=torch.tensor([row["input_ids"]])).logits[0].log_softmax(-1)
    first_pos = next(i for i, t in enumerate(row["labels"][1:]) if t != -100)
    idx, t_lp, tail = first.batch([12])
    assert torch.allclose(t_lp[0], lp[first_pos].topk(8).values, atol=1e-5)
    assert torch.allclose(t_lp[0].exp().sum() + tail[0].exp(), torch.tensor(1.0), atol=1e-5)
    # another k, another temperature, other data: another key (a new build), never the old cache
    assert ensure_targets(_ctx(4), spec, data, load, 0, "tmpl").root != first.root
    assert ensure_targets(_ctx(8), spec, data[:1], load, 0, "tmpl").root != first.root
    assert load.calls == 3
    # a cache named explicitly but built for other settings, or for another teacher, is refused by its key
    with pytest.raises(EngineError, match="another top_k"):
        ensure_targets(_ctx(16, path=str(first.root)), spec, data, load, 0, "tmpl")
    with pytest.raises(EngineError, match="other data"):
        ensure_targets(_ctx(8, path=str(first.root)), spec, data[:1], load, 0, "tmpl")
    with pytest.raises(EngineError, match="another chat template"):
        ensure_targets(_ctx(8, path=str(first.root)), spec, data, load, 0, "other")
    other = teacher_folder.parent / "other-teacher"
    _tiny(32, seed=7).save_pretrained(other)
    with pytest.raises(EngineError, match="another teacher"):
        ensure_targets(_ctx(8, path=str(first.root)), ModelSpec(source=str(other)), data, load, 0, "tmpl")
    assert ensure_targets(_ctx(8, path=str(first.root)), spec, data, load, 0, "tmpl").root == first.root


def _args(tmp_path: Path, **kw) -> TrainingArguments:
    kw.setdefault("max_steps", 4)
    return TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4,
                             learning_rate=3e-3, report_to="none", use_cpu=True, save_strategy="no",
                             disable_tqdm=True, seed=0, remove_unused_columns=False, **kw)


def test_cached_trainer_equals_the_live_teacher_at_full_k(teacher_folder: Path, tmp_path: Path) -> None:
    teacher = Qwen2ForCausalLM.from_pretrained(teacher_folder).eval()
    train = Dataset.from_list(_rows(8))
    targets = ensure_targets(_ctx(VOCAB, temperature=2.0), ModelSpec(source=str(teacher_folder)), [train],
                             lambda: teacher, 0, "")
    (numbered,) = with_row_numbers([train])
    settings = DistillSpec(alpha=0.4, temperature=2.0, divergence="jsd", chunk_size=7)
    student = _tiny(16, seed=3)
    live = KDTrainer(model=student, teacher_model=teacher, kd_settings=settings, args=_args(tmp_path))
    cached = KDTrainer(model=student, kd_settings=settings, teacher_targets=targets, args=_args(tmp_path))
    batch = pad_collator(0)([numbered[i] for i in (5, 1, 6)])
    assert batch["row"].tolist() == [5, 1, 6]
    live_loss = live.compute_loss(student, {k: v for k, v in batch.items() if k != "row"})
    cached_loss = cached.compute_loss(student, batch)
    torch.testing.assert_close(cached_loss, live_loss, rtol=1e-5, atol=1e-6)
    (g1,) = torch.autograd.grad(live_loss, student.lm_head.weight)
    (g2,) = torch.autograd.grad(cached_loss, student.lm_head.weight)
    torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-6)
    # and it trains end to end with the teacher nowhere in memory
    trainer = KDTrainer(model=_tiny(16, seed=3), kd_settings=settings, teacher_targets=targets,
                        args=_args(tmp_path), train_dataset=numbered)
    trainer.train()
    assert trainer.teacher_model is None and trainer.state.log_history[-1]["train_loss"] > 0


def test_chunked_sft_trainer_matches_the_stock_trainer(tmp_path: Path) -> None:
    from transformers import Trainer

    train = Dataset.from_list(_rows(8))
    stock = Trainer(model=_tiny(16), args=_args(tmp_path, max_steps=3), train_dataset=train,
                    data_collator=pad_collator(0))
    ours = ChunkedSFTTrainer(model=_tiny(16), args=_args(tmp_path, max_steps=3), train_dataset=train,
                             data_collator=pad_collator(0), chunk_size=5)
    stock.train()
    ours.train()
    for a, b in zip(stock.model.parameters(), ours.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # Adam divides fp32 rounding by tiny moments
    assert ours.evaluate(train)["eval_loss"] == pytest.approx(stock.evaluate(train)["eval_loss"], rel=1e-5)
