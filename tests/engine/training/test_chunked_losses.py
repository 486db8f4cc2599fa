"""Tests of engine.training.chunked_losses: top-k + tail divergences against the full-vocabulary formulas, the cached KD
loss against the reference joint loss, and the chunked SFT cross-entropy against the standard one (values and
gradients)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.training.chunked_losses import cached_kd_loss, chunked_ce_loss, teacher_topk, topk_tail_divergence
from engine.training.losses import divergence, kd_joint_loss

F64 = torch.float64
KINDS = [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5), ("jsd", 0.2)]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


def _logits(n: int = 6, vocab: int = 50, seed: int = 0, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, vocab, generator=g, dtype=F64) * scale,
            torch.randn(n, vocab, generator=g, dtype=F64) * scale)


def _lumped_teacher_logits(teacher: torch.Tensor, student: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """Full-vocabulary teacher logits whose distribution at T keeps p_T on its top k and spreads the tail mass
    like the student's: q(j) = tail_T * p_S(j) / tail_S off the top k."""
    p_t = F.softmax(teacher / temperature, -1)
    p_s = F.softmax(student / temperature, -1)
    idx = p_t.topk(k, -1).indices
    keep = torch.zeros_like(p_t, dtype=torch.bool).scatter(-1, idx, True)
    tail_t = (p_t * ~keep).sum(-1, keepdim=True)
    tail_s = (p_s * ~keep).sum(-1, keepdim=True)
    q = torch.where(keep, p_t, tail_t * p_s / tail_s)
    return q.log() * temperature  # divided by T again inside divergence()


@pytest.mark.parametrize("kind,beta", KINDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_tail_equals_full_divergence_on_the_lumped_teacher(kind: str, beta: float, temperature: float) -> None:
    teacher, student = _logits()
    for k in (1, 5, 20):
        idx, t_lp, t_tail = teacher_topk(teacher.double(), k, temperature)
        ours = topk_tail_divergence(student, idx, t_lp.double(), t_tail.double(), kind, temperature, beta)
        lumped = _lumped_teacher_logits(teacher, student, k, temperature)
        exact = divergence(lumped, student, kind, temperature, beta)
        assert torch.allclose(ours.double(), exact, rtol=1e-4, atol=1e-6), (k, ours, exact)
        full = divergence(teacher, student, kind, temperature, beta)
        assert (ours.double() <= full + 1e-5).all()  # data processing: lumping never adds divergence


@pytest.mark.parametrize("kind,beta", KINDS)
def test_topk_tail_approaches_the_full_divergence_as_k_grows(kind: str, beta: float) -> None:
    teacher, student = _logits(vocab=200, scale=2.0)
    full = divergence(teacher, student, kind, 1.0, beta)
    gaps = []
    for k in (2, 16, 64, 150, 200):
        idx, t_lp, t_tail = teacher_topk(teacher, k)
        gaps.append((full - topk_tail_divergence(student, idx, t_lp, t_tail, kind, 1.0, beta)).abs().mean().item())
    assert gaps == sorted(gaps, reverse=True)  # monotone towards the full divergence
    assert gaps[-1] < 1e-5 and gaps[0] > 1e-3


def test_teacher_topk_keeps_the_mass() -> None:
    teacher, _ = _logits()
    idx, t_lp, t_tail = teacher_topk(teacher, 8, 2.0)
    total = t_lp.exp().sum(-1) + t_tail.exp()
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    assert torch.equal(idx, (teacher / 2.0).topk(8, -1).indices)


def _batch(vocab: int = 40, hidden: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(2, 7, hidden, generator=g, dtype=F64, requires_grad=True)
    head = torch.nn.Linear(hidden, vocab, bias=True).double()
    labels = torch.randint(0, vocab, (2, 7), generator=g)
    labels[0, :3] = -100
    labels[1, :2] = -100
    labels[1, 6] = -100  # padding at the end of the second row
    return hs, head, labels


@pytest.mark.parametrize("kind,beta", KINDS)
def test_cached_kd_loss_matches_the_joint_loss_and_its_gradients(kind: str, beta: float) -> None:
    """With k = vocabulary the cached loss is the reference joint loss, value and gradients, in any chunking."""
    hs, head, labels = _batch()
    teacher = torch.randn(2, 7, 40, generator=torch.Generator().manual_seed(5), dtype=F64) * 2
    ref_loss, ref_ce, ref_div = kd_joint_loss(head(hs), teacher, labels, alpha=0.3, temperature=2.0,
                                              divergence_kind=kind, beta=beta)
    ref_grads = torch.autograd.grad(ref_loss, [hs, head.weight, head.bias])
    mask = labels[:, 1:] != -100
    idx, t_lp, t_tail = teacher_topk(teacher[:, :-1][mask], 40, 2.0)
    for chunk in (1, 3, 100):
        loss, ce, div = cached_kd_loss(hs, head, labels, idx, t_lp, t_tail, alpha=0.3, temperature=2.0,
                                       divergence=kind, beta=beta, chunk_size=chunk)
        grads = torch.autograd.grad(loss, [hs, head.weight, head.bias])
        assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
        assert (ce.item(), div.item()) == pytest.approx((ref_ce.item(), ref_div.item()), rel=1e-5)
        for g, r in zip(grads, ref_grads):
            assert torch.allclose(g, r, rtol=1e-4, atol=1e-7)


def test_cached_kd_loss_refuses_targets_of_other_data() -> None:
    hs, head, labels = _batch()
    idx, t_lp, t_tail = teacher_topk(torch.randn(3, 40), 4)
    with pytest.raises(ValueError, match="built for other data"):
        cached_kd_loss(hs, head, labels, idx, t_lp, t_tail)


@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_chunked_ce_equals_standard_cross_entropy_and_its_gradients(chunk: int) -> None:
    hs, head, labels = _batch()
    logits = head(hs)
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 40), labels[:, 1:].reshape(-1), ignore_index=-100)
    ref_grads = torch.autograd.grad(ref, [hs, head.weight, head.bias])
    loss = chunked_ce_loss(hs, head, labels, chunk_size=chunk)
    grads = torch.autograd.grad(loss, [hs, head.weight, head.bias])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-10, atol=1e-12)
    summed = chunked_ce_loss(hs, head, labels, chunk_size=chunk, num_items_in_batch=20)
    n = int((labels[:, 1:] != -100).sum())
    assert summed.item() == pytest.approx(ref.item() * n / 20, rel=1e-12)


def test_chunked_ce_matches_a_qwen2_models_own_loss() -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from engine.models.hidden_states import last_hidden_state

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))
    ids = torch.randint(0, 64, (2, 9))
    labels = ids.clone()
    labels[:, :4] = -100
    mask = torch.ones_like(ids)
    ref = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    ref_grad = torch.autograd.grad(ref, model.model.embed_tokens.weight)[0]
    hidden = last_hidden_state(model, ids, mask)
    loss = chunked_ce_loss(hidden, model.get_output_embeddings(), labels, chunk_size=3)
    grad = torch.autograd.grad(loss, model.model.embed_tokens.weight)[0]
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)
