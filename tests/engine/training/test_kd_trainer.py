"""Tests of engine.training.kd_trainer: a short KD run on tiny Qwen2 models, logging, vocab checks, peft, collation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import Qwen2Config, Qwen2ForCausalLM, TrainerCallback, TrainingArguments

from engine.contract.spec import DistillSpec
from engine.training_data.collate import pad_collator
from engine.models.hidden_states import last_hidden_state
from engine.training.kd_trainer import KDTrainer
from engine.training.losses import kd_joint_loss

VOCAB = 512


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


def _tiny(hidden: int, layers: int = 2, vocab: int = VOCAB, seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True,
        pad_token_id=0,
    )
    return Qwen2ForCausalLM(cfg)


def _toy_rows(n: int = 48) -> list[dict[str, list[int]]]:
    """A repetitive task: a 3-token prompt naming a family, then that family's fixed 6-token answer."""
    rows = []
    for i in range(n):
        fam = i % 4
        prompt = [3, 10 + fam, 4][: 2 + i % 2]  # prompts of two lengths, so padding occurs
        answer = [(20 + 37 * fam + 11 * j) % VOCAB for j in range(6)] + [2]
        ids = prompt + answer
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(prompt) + answer})
    return rows


class _Recorder(TrainerCallback):
    def __init__(self) -> None:
        self.logs: list[dict[str, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


def _args(tmp_path: Path, **overrides) -> TrainingArguments:
    base = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=20,
        learning_rate=3e-3, logging_steps=5, report_to="none", use_cpu=True, bf16=False, save_strategy="no",
        disable_tqdm=True, seed=0,
    )
    base.update(overrides)
    return TrainingArguments(**base)


def test_short_kd_run_learns_logs_and_leaves_the_teacher_alone(tmp_path: Path) -> None:
    student, teacher = _tiny(32), _tiny(64, seed=1)
    before_student = {k: v.clone() for k, v in student.state_dict().items()}
    before_teacher = {k: v.clone() for k, v in teacher.state_dict().items()}
    recorder = _Recorder()
    trainer = KDTrainer(
        model=student, teacher_model=teacher, kd_settings=DistillSpec(alpha=0.5, divergence="jsd", chunk_size=16),
        args=_args(tmp_path), train_dataset=Dataset.from_list(_toy_rows()), callbacks=[recorder],
    )
    trainer.train()
    train_logs = [log for log in recorder.logs if "loss" in log]
    assert len(train_logs) == 4
    assert all({"kd/ce", "kd/divergence"} <= log.keys() for log in train_logs)
    assert train_logs[-1]["loss"] < 0.8 * train_logs[0]["loss"]
    assert train_logs[-1]["kd/ce"] < train_logs[0]["kd/ce"]
    # the logged loss is the joint loss of the logged parts
    for log in train_logs:
        assert log["loss"] == pytest.approx(0.5 * log["kd/ce"] + 0.5 * log["kd/divergence"], rel=1e-3)
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, before_student[k])]
    assert "lm_head.weight" in changed and len(changed) > 10
    assert all(torch.equal(v, before_teacher[k]) for k, v in teacher.state_dict().items())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    metrics = trainer.evaluate(Dataset.from_list(_toy_rows(8)))
    assert {"eval_loss", "eval_kd/ce", "eval_kd/divergence"} <= metrics.keys()


def test_alpha_one_loss_equals_the_students_lm_loss(tmp_path: Path) -> None:
    student, teacher = _tiny(32), _tiny(48, seed=2)
    trainer = KDTrainer(model=student, teacher_model=teacher, kd_settings=DistillSpec(alpha=1.0),
                        args=_args(tmp_path))
    batch = pad_collator(0)(_toy_rows(4))
    with torch.no_grad():
        kd = trainer.compute_loss(student, batch)
        ref = student(**batch).loss
    torch.testing.assert_close(kd, ref, rtol=1e-5, atol=1e-5)


def test_kd_loss_matches_full_logit_reference(tmp_path: Path) -> None:
    student, teacher = _tiny(32), _tiny(48, seed=3)
    settings = DistillSpec(alpha=0.3, temperature=2.0, divergence="reverse_kl", chunk_size=5)
    trainer = KDTrainer(model=student, teacher_model=teacher, kd_settings=settings, args=_args(tmp_path))
    batch = pad_collator(0)(_toy_rows(4))
    with torch.no_grad():
        kd = trainer.compute_loss(student, batch)
        ref, _, _ = kd_joint_loss(student(**batch).logits, teacher(**batch).logits, batch["labels"], alpha=0.3,
                                  temperature=2.0, divergence_kind="reverse_kl")
    torch.testing.assert_close(kd, ref, rtol=1e-5, atol=1e-5)


def test_different_vocabularies_are_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sequence-level KD"):
        KDTrainer(model=_tiny(32), teacher_model=_tiny(32, vocab=600), args=_args(tmp_path))


def test_models_that_post_process_logits_are_refused(tmp_path: Path) -> None:
    teacher = _tiny(32)
    teacher.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="final_logit_softcapping"):
        KDTrainer(model=_tiny(32), teacher_model=teacher, args=_args(tmp_path))


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="alpha"):
        DistillSpec(alpha=1.5)
    with pytest.raises(ValueError, match="divergence"):
        DistillSpec(divergence="kl")
    with pytest.raises(ValueError, match="chunk_size"):
        DistillSpec(chunk_size=0)


def test_peft_student_trains_only_its_adapters(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    base = _tiny(32)
    ids = torch.tensor([[3, 10, 4, 20, 57]])
    with torch.no_grad():
        plain = last_hidden_state(base, ids, torch.ones_like(ids))
    student = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    with torch.no_grad():  # LoRA B starts at zero: the wrapped backbone gives the same hidden state
        torch.testing.assert_close(last_hidden_state(student, ids, torch.ones_like(ids)), plain)
    trainer = KDTrainer(model=student, teacher_model=_tiny(48, seed=4), args=_args(tmp_path, max_steps=3),
                        train_dataset=Dataset.from_list(_toy_rows(24)))
    lora_before = {n: p.clone() for n, p in student.named_parameters() if p.requires_grad}
    frozen_before = base.get_output_embeddings().weight.clone()
    trainer.train()
    assert any(not torch.equal(p, lora_before[n]) for n, p in student.named_parameters() if p.requires_grad)
    assert torch.equal(base.get_output_embeddings().weight, frozen_before)


def test_pad_collator_pads_right_and_masks_labels() -> None:
    batch = pad_collator(7, pad_to_multiple_of=4)(
        [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [1, 2, 3, 4, 5], "attention_mask": [1] * 5,
                                                           "labels": [-100, -100, 3, 4, 5]}]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3, 7, 7, 7, 7, 7], [1, 2, 3, 4, 5, 7, 7, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3] + [-100] * 5, [-100, -100, 3, 4, 5] + [-100] * 3]


def test_wrapped_student_goes_through_the_wrappers_forward(tmp_path: Path) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    student, teacher = _tiny(32), _tiny(48, seed=5)
    trainer = KDTrainer(model=student, teacher_model=teacher, args=_args(tmp_path))
    batch = pad_collator(0)(_toy_rows(4))
    direct = trainer.compute_loss(student, batch)
    (direct_grad,) = torch.autograd.grad(direct, student.lm_head.weight)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(student)
        loss = trainer.compute_loss(wrapped, batch)
        loss.backward()
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(loss, direct)
    torch.testing.assert_close(student.lm_head.weight.grad, direct_grad)
