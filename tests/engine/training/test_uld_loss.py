"""Tests of engine.training.uld_loss: the ULD distance by hand, what it reduces to with one vocabulary, the top-k +
tail form against the full one, agreement with TRL's GOLD ULDLoss, and the chunked joint loss (value, gradient,
masked positions, no gradient to the teacher's targets)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from engine.training.chunked_losses import LOG_FLOOR, teacher_topk
from engine.training.uld_loss import cached_uld_loss, uld_reference, uld_topk

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


def test_uld_by_hand_pads_the_shorter_vocabulary() -> None:
    student = torch.tensor([[0.1, 0.7, 0.2]], dtype=F64)  # sorted: .7 .2 .1
    teacher = torch.tensor([[0.5, 0.5]], dtype=F64)  # sorted: .5 .5, padded with 0
    assert uld_reference(student, teacher).item() == pytest.approx(0.2 + 0.3 + 0.1)


def test_identical_vocabularies_reduce_to_sorted_l1_not_kl() -> None:
    g = torch.Generator().manual_seed(0)
    p = F.softmax(torch.randn(5, 40, generator=g, dtype=F64) * 2, -1)
    q = F.softmax(torch.randn(5, 40, generator=g, dtype=F64) * 2, -1)
    assert torch.allclose(uld_reference(p, p), torch.zeros(5, dtype=F64))  # identical: 0, like the KL
    assert torch.allclose(uld_reference(p[:, torch.randperm(40, generator=g)], p), torch.zeros(5, dtype=F64))
    sorted_l1 = (p.sort(-1).values - q.sort(-1).values).abs().sum(-1)
    assert torch.allclose(uld_reference(p, q), sorted_l1)  # what it is with one vocabulary
    assert (uld_reference(p, q) <= (p - q).abs().sum(-1) + 1e-12).all()  # never above the plain L1 distance


@pytest.mark.parametrize("student_vocab,teacher_vocab", [(40, 40), (30, 50), (50, 30)])
def test_topk_tail_equals_full_uld_when_k_covers_the_vocabulary(student_vocab: int, teacher_vocab: int) -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randn(6, student_vocab, generator=g, dtype=F64) * 3
    t = torch.randn(6, teacher_vocab, generator=g, dtype=F64) * 3
    full = uld_reference(F.softmax(s / 2, -1), F.softmax(t / 2, -1))
    _, t_lp, t_tail = teacher_topk(t, teacher_vocab, temperature=2.0)
    assert torch.allclose(uld_topk(s, t_lp, t_tail, temperature=2.0).double(), full, atol=1e-5)
    _, t_lp, t_tail = teacher_topk(t, 8, temperature=2.0)  # k = 8: a lower bound (triangle inequality)
    assert (uld_topk(s, t_lp, t_tail, temperature=2.0).double() <= full + 1e-5).all()


def test_matches_trl_gold_uld_loss() -> None:
    from trl.experimental.gold.gold_trainer import ULDLoss

    config = SimpleNamespace(uld_crossentropy_weight=0.0, uld_distillation_weight=1.0, uld_student_temperature=1.0,
                             uld_teacher_temperature=1.0, uld_skip_student_eos=False, uld_skip_teacher_eos=False,
                             use_extended_uld=False, uld_token_merge_strategy="observed")
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(1, 7, 30, generator=g), torch.randn(1, 7, 45, generator=g)
    labels = torch.tensor([[-100, -100, 5, 6, 7, 8, 9]])
    ids = torch.zeros(1, 7, dtype=torch.long)
    trl = ULDLoss(config)(s, t, labels, labels, ids, ids)
    # TRL compares the logits at the answer's own positions (2..6), averaged over them
    ours = uld_reference(F.softmax(s[0, 2:], -1), F.softmax(t[0, 2:], -1)).mean()
    assert trl.item() == pytest.approx(ours.item(), rel=1e-5)


def _setup(seed: int = 3, vocab: int = 37, hidden: int = 8, k: int = 6, temperature: float = 1.5):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(2, 5, hidden, generator=g, dtype=F64, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=g, dtype=F64, requires_grad=True)
    labels = torch.tensor([[-100, -100, 4, 9, 2], [-100, 3, 3, 1, -100]])
    n = int((labels[:, 1:] != -100).sum())
    teacher_logits = torch.randn(n, 52, generator=g, dtype=F64) * 3  # another vocabulary
    _, t_lp, t_tail = teacher_topk(teacher_logits, k, temperature)
    return h, w, labels, t_lp, t_tail


def _reference(h, w, labels, t_lp, t_tail, valid, alpha, temperature):
    """The joint loss from full logits with autograd (topk is differentiable)."""
    z = (h @ w.T)[:, :-1][labels[:, 1:] != -100]  # [N, V]
    y = labels[:, 1:][labels[:, 1:] != -100]
    ce = F.cross_entropy(z, y, reduction="sum")
    p = F.softmax(z / temperature, -1)
    t_top, t_tailp = t_lp.double().exp(), t_tail.double().exp()
    top = p.topk(t_top.size(-1), -1).values
    div = (top - t_top).abs().sum(-1) + ((1 - top.sum(-1)) - t_tailp).abs()
    return (alpha * ce + (1 - alpha) * (div * valid.double()).sum()) / y.numel()


@pytest.mark.parametrize("temperature", [1.0, 1.5])
def test_chunked_joint_loss_value_and_gradient_match_autograd(temperature: float) -> None:
    h, w, labels, t_lp, t_tail = _setup(temperature=temperature)
    valid = torch.tensor([True, True, False, True, True, True])  # one position without a teacher match
    loss, ce, div = cached_uld_loss(h, w, labels, t_lp, t_tail, valid, alpha=0.3, temperature=temperature,
                                    chunk_size=2)
    loss.backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref = _reference(h, w, labels, t_lp, t_tail, valid, 0.3, temperature)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-7)  # the targets are float32
    assert torch.allclose(gh, h.grad, atol=1e-7) and torch.allclose(gw, w.grad, atol=1e-7)
    assert ce.item() > 0 and 0 <= div.item() <= 2


def test_gradients_reach_the_student_only() -> None:
    h, w, labels, t_lp, t_tail = _setup()
    t_lp.requires_grad_(True)
    loss, _, _ = cached_uld_loss(h, w, labels, t_lp, t_tail, alpha=0.5)
    loss.backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    assert t_lp.grad is None


def test_identical_teacher_gives_zero_divergence() -> None:
    h, w, labels, _, _ = _setup()
    z = (h @ w.T)[:, :-1][labels[:, 1:] != -100].detach()
    _, t_lp, t_tail = teacher_topk(z, 37)  # the student's own distribution as the teacher's targets
    _, _, div = cached_uld_loss(h, w, labels, t_lp, t_tail, alpha=0.5)
    assert div.item() == pytest.approx(0.0, abs=1e-6)
    assert t_tail.max().item() <= LOG_FLOOR + 1e-3  # k = V: an empty tail bucket
