"""Tests of engine.training.losses: divergences against their formulas and TRL, the joint loss, and the chunked
version."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM

from engine.contract.vocabulary import DIVERGENCES
from engine.training.losses import chunked_kd_loss, divergence, kd_joint_loss

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


def _probs(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


P_T = _probs([0.7, 0.2, 0.1], [0.25, 0.25, 0.5])  # hand-made teacher distributions, [2, 3]
P_S = _probs([0.4, 0.4, 0.2], [0.1, 0.6, 0.3])  # hand-made student distributions, [2, 3]


def _kl(p: torch.Tensor, q: torch.Tensor) -> list[float]:
    """KL(p || q) per row, written out with Python floats."""
    return [sum(a * math.log(a / b) for a, b in zip(pr.tolist(), qr.tolist())) for pr, qr in zip(p, q)]


def test_forward_and_reverse_kl_match_their_formulas_and_differ() -> None:
    fwd = divergence(P_T.log(), P_S.log(), "forward_kl")
    rev = divergence(P_T.log(), P_S.log(), "reverse_kl")
    assert fwd.tolist() == pytest.approx(_kl(P_T, P_S), rel=1e-12)
    assert rev.tolist() == pytest.approx(_kl(P_S, P_T), rel=1e-12)
    assert (fwd - rev).abs().min() > 1e-3


def test_jsd_matches_the_gkd_formula() -> None:
    beta = 0.3
    m = beta * P_T + (1 - beta) * P_S
    expected = [beta * a + (1 - beta) * b for a, b in zip(_kl(P_T, m), _kl(P_S, m))]
    got = divergence(P_T.log(), P_S.log(), "jsd", beta=beta)
    assert got.tolist() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_jsd_agrees_with_trl_generalized_jsd_loss(beta: float, temperature: float) -> None:
    from trl.experimental.gkd import GKDTrainer

    torch.manual_seed(0)
    t, s = torch.randn(2, 5, 17, dtype=F64), torch.randn(2, 5, 17, dtype=F64)
    trl = GKDTrainer.generalized_jsd_loss(s, t, beta=beta, temperature=temperature, reduction="none").sum(-1)
    ours = divergence(t, s, "jsd", temperature=temperature, beta=beta)
    torch.testing.assert_close(ours, trl)


def test_jsd_limits_approach_the_kls() -> None:
    torch.manual_seed(1)
    t, s = torch.randn(6, 11, dtype=F64), torch.randn(6, 11, dtype=F64)
    fwd, rev = divergence(t, s, "forward_kl"), divergence(t, s, "reverse_kl")
    eps = 1e-5
    torch.testing.assert_close(divergence(t, s, "jsd", beta=eps) / eps, fwd, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(divergence(t, s, "jsd", beta=1 - eps) / eps, rev, rtol=1e-3, atol=1e-6)
    # TRL's convention: the end points are the KLs themselves
    torch.testing.assert_close(divergence(t, s, "jsd", beta=0.0), fwd)
    torch.testing.assert_close(divergence(t, s, "jsd", beta=1.0), rev)


def test_jsd_is_symmetric_at_one_half_nonnegative_and_zero_on_equal_inputs() -> None:
    torch.manual_seed(2)
    t, s = 3 * torch.randn(50, 13, dtype=F64), 3 * torch.randn(50, 13, dtype=F64)
    torch.testing.assert_close(divergence(t, s, "jsd", beta=0.5), divergence(s, t, "jsd", beta=0.5))
    for beta in (0.1, 0.5, 0.9):
        assert (divergence(t, s, "jsd", beta=beta) > 0).all()
    for kind in DIVERGENCES:
        assert divergence(t, t.clone(), kind).abs().max() < 1e-12
        # equal up to a constant shift of the logits is the same distribution
        assert divergence(t, t + 5.0, kind).abs().max() < 1e-12


def test_temperature_softens_both_distributions() -> None:
    torch.manual_seed(3)
    t, s = torch.randn(4, 9, dtype=F64), torch.randn(4, 9, dtype=F64)
    for kind in DIVERGENCES:
        torch.testing.assert_close(divergence(t, s, kind, temperature=2.0), divergence(t / 2, s / 2, kind))


def _batch(seed: int = 0, b: int = 2, length: int = 9, vocab: int = 23) -> tuple[torch.Tensor, ...]:
    """Random student/teacher logits [B, L, V] and labels [B, L] with a masked prompt."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, length, vocab, dtype=F64, generator=g)
    t = torch.randn(b, length, vocab, dtype=F64, generator=g)
    labels = torch.randint(0, vocab, (b, length), generator=g)
    labels[0, :4] = -100
    labels[1, :2] = -100
    labels[1, -2:] = -100  # right padding
    return s, t, labels


def test_joint_loss_scales_the_divergence_by_t_squared() -> None:
    s, t, labels = _batch()
    loss, ce, div = kd_joint_loss(s, t, labels, alpha=0.0, temperature=2.0, divergence_kind="reverse_kl")
    mask = labels[:, 1:] != -100
    expected_div = divergence(t[:, :-1][mask], s[:, :-1][mask], "reverse_kl", temperature=2.0).mean()
    torch.testing.assert_close(div, expected_div)
    torch.testing.assert_close(loss, 4.0 * expected_div)
    mixed, _, _ = kd_joint_loss(s, t, labels, alpha=0.25, temperature=3.0)
    _, ce3, div3 = kd_joint_loss(s, t, labels, alpha=0.0, temperature=3.0)
    torch.testing.assert_close(mixed, 0.25 * ce3 + 0.75 * 9.0 * div3)


def test_alpha_one_is_the_models_own_causal_lm_loss() -> None:
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    model = Qwen2ForCausalLM(cfg).eval()
    ids = torch.randint(0, 512, (2, 12))
    labels = ids.clone()
    labels[:, :5] = -100
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels, output_hidden_states=True)
        loss, ce, _ = kd_joint_loss(out.logits, torch.randn_like(out.logits), labels, alpha=1.0)
        hidden = out.hidden_states[-1]
        chunked, _, _ = chunked_kd_loss(hidden, hidden, model.lm_head, model.lm_head, labels, alpha=1.0, chunk_size=5)
    torch.testing.assert_close(loss, out.loss)
    torch.testing.assert_close(ce, out.loss)
    torch.testing.assert_close(chunked, out.loss, rtol=1e-5, atol=1e-5)


def test_masked_positions_change_neither_loss_nor_gradients() -> None:
    s, t, labels = _batch(seed=4)
    masked = torch.zeros_like(labels, dtype=torch.bool)
    masked[:, :-1] = labels[:, 1:] == -100  # positions whose (shifted) target is ignored
    masked[:, -1] = True  # the last position predicts nothing
    results = []
    for noise in (0.0, 7.0):
        s2 = (s + noise * masked.unsqueeze(-1) * torch.randn_like(s)).requires_grad_(True)
        t2 = t + noise * masked.unsqueeze(-1) * torch.randn_like(t)
        loss, _, _ = kd_joint_loss(s2, t2, labels, alpha=0.3, divergence_kind="jsd", beta=0.4)
        (grad,) = torch.autograd.grad(loss, s2)
        results.append((loss, grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    assert results[0][1][masked].abs().max() == 0


def _hidden_case(bias: bool, seed: int = 5) -> tuple:
    """Hidden states [2, 10, 6] / [2, 10, 8], heads to a 31-token vocabulary, labels with prompt and padding."""
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(2, 10, 6, dtype=F64, generator=g).requires_grad_(True)
    ht = torch.randn(2, 10, 8, dtype=F64, generator=g)
    s_head = nn.Linear(6, 31, bias=bias, dtype=F64)
    t_head = nn.Linear(8, 31, bias=bias, dtype=F64)
    labels = torch.randint(0, 31, (2, 10), generator=g)
    labels[0, :3] = -100
    labels[1, :6] = -100
    labels[1, -1] = -100
    return hs, ht, s_head, t_head, labels


@pytest.mark.parametrize(
    ("kind", "temperature", "beta", "top_k"),
    [
        ("forward_kl", 1.0, 0.5, 0), ("forward_kl", 2.0, 0.5, 0), ("reverse_kl", 1.0, 0.5, 0),
        ("reverse_kl", 2.0, 0.5, 0), ("jsd", 1.5, 0.3, 0), ("jsd", 1.0, 0.7, 5), ("jsd", 2.0, 0.0, 0),
        ("forward_kl", 0.5, 0.5, 4),
    ],
)
@pytest.mark.parametrize("chunk_size", [1, 3, 9, 64])
def test_chunked_equals_unchunked_with_gradients(kind: str, temperature: float, beta: float, top_k: int,
                                                 chunk_size: int) -> None:
    hs, ht, s_head, t_head, labels = _hidden_case(bias=chunk_size == 3)
    settings = dict(alpha=0.4, temperature=temperature, beta=beta, top_k=top_k)
    params = [hs, *s_head.parameters()]
    ref = kd_joint_loss(s_head(hs), t_head(ht), labels, divergence_kind=kind, **settings)
    ref_grads = torch.autograd.grad(ref[0], params)
    got = chunked_kd_loss(hs, ht, s_head, t_head, labels, divergence=kind, chunk_size=chunk_size, **settings)
    got_grads = torch.autograd.grad(got[0], params)
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(ref_grads, got_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert all(p.grad is None for p in t_head.parameters())


def test_top_k_of_whole_vocabulary_equals_full_and_smaller_k_differs() -> None:
    s, t, labels = _batch(seed=6)
    for kind in DIVERGENCES:
        full = kd_joint_loss(s, t, labels, alpha=0.0, divergence_kind=kind)[0]
        torch.testing.assert_close(kd_joint_loss(s, t, labels, alpha=0.0, divergence_kind=kind, top_k=23)[0], full)
        top3 = kd_joint_loss(s, t, labels, alpha=0.0, divergence_kind=kind, top_k=3)[0]
        assert top3 >= 0 and abs(float(top3 - full)) > 1e-3


def test_num_items_in_batch_makes_micro_batches_add_up() -> None:
    hs, ht, s_head, t_head, labels = _hidden_case(bias=False, seed=7)
    whole = chunked_kd_loss(hs, ht, s_head, t_head, labels, divergence="jsd", chunk_size=4)[0]
    (whole_grad,) = torch.autograd.grad(whole, hs)
    total = int((labels[:, 1:] != -100).sum())
    parts = sum(
        chunked_kd_loss(hs[i : i + 1], ht[i : i + 1], s_head, t_head, labels[i : i + 1], divergence="jsd",
                        chunk_size=4, num_items_in_batch=torch.tensor(total))[0]
        for i in range(2)
    )
    (parts_grad,) = torch.autograd.grad(parts, hs)
    torch.testing.assert_close(parts, whole)
    torch.testing.assert_close(parts_grad, whole_grad)


def test_no_grad_gives_the_same_value_and_vocab_mismatch_is_refused() -> None:
    hs, ht, s_head, t_head, labels = _hidden_case(bias=False, seed=8)
    for kind in DIVERGENCES:
        for temperature in (1.0, 2.0):
            kw = dict(divergence=kind, temperature=temperature, chunk_size=4)
            with_grad = chunked_kd_loss(hs, ht, s_head, t_head, labels, **kw)
            with torch.no_grad():
                without = chunked_kd_loss(hs, ht, s_head, t_head, labels, **kw)
            for a, b in zip(with_grad, without):
                torch.testing.assert_close(a.detach(), b)
    with pytest.raises(ValueError, match="vocabulary"):
        chunked_kd_loss(hs, ht, s_head, nn.Linear(8, 30, dtype=F64), labels)
    with pytest.raises(ValueError, match="divergence"):
        divergence(hs, hs, "kl")  # type: ignore[arg-type]


def test_all_prompt_batch_gives_zero_loss_with_a_graph() -> None:
    hs, ht, s_head, t_head, labels = _hidden_case(bias=False)
    labels = torch.full_like(labels, -100)
    loss, ce, div = chunked_kd_loss(hs, ht, s_head, t_head, labels)
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(ce) == 0.0 and float(div) == 0.0
    assert hs.grad is not None and hs.grad.abs().max() == 0


@pytest.mark.parametrize("kind", ["forward_kl", "jsd"])
def test_bfloat16_inputs_give_close_values_and_gradients_in_their_dtype(kind: str) -> None:
    hs, ht, s_head, t_head, labels = _hidden_case(bias=False, seed=9)
    ref = chunked_kd_loss(hs, ht, s_head, t_head, labels, divergence=kind, chunk_size=4)
    (ref_grad,) = torch.autograd.grad(ref[0], hs)
    hs16 = hs.detach().to(torch.bfloat16).requires_grad_(True)
    s16, t16 = s_head.to(torch.bfloat16), t_head.to(torch.bfloat16)
    got = chunked_kd_loss(hs16, ht.to(torch.bfloat16), s16, t16, labels, divergence=kind, chunk_size=4)
    got[0].backward()
    assert hs16.grad.dtype == torch.bfloat16 and s16.weight.grad.dtype == torch.bfloat16
    torch.testing.assert_close(got[0].double(), ref[0].detach(), rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(hs16.grad.double(), ref_grad, rtol=5e-2, atol=5e-3)


def test_joint_weights_are_the_papers_formula_and_every_kd_default_is_the_specs():
    from engine.contract.stage_specs import DistillSpec
    from engine.training.losses import KD, joint_weights

    w_ce, w_div = joint_weights(0.25, 3.0, tokens=4.0)
    assert w_ce == pytest.approx(0.25 / 4) and w_div == pytest.approx(0.75 * 9 / 4)
    assert joint_weights(1.0, 2.0) == (1.0, 0.0)
    assert KD == DistillSpec()
    with pytest.raises(ValueError, match="temperature"):
        divergence(torch.zeros(2, 5), torch.zeros(2, 5), temperature=0.0)
