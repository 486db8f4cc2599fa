"""Losses computed from hidden states a chunk of response tokens at a time: SFT cross-entropy, and KD against
cached top-k teacher targets (offline KD, as DistillKit does).

Both never hold the ``[tokens, vocab]`` logits of a whole batch: each chunk of response positions is projected
through the LM head, its loss and its gradient with respect to those logits are formed in the same pass, and the
gradient is folded back into the hidden states and the head at once (the idea of
:func:`engine.training.losses.chunked_kd_loss`).
Prompt and padding positions are never projected at all.

**Top-k + tail.** A cached teacher keeps, per response token, its k most likely tokens ``S`` with their
log-probabilities at temperature T, plus one *tail bucket* holding the rest of its mass, ``log(1 - sum_S p_T)``.
The student's distribution is lumped the same way (its own probabilities on ``S`` and its remaining mass), and the
divergence is taken between these two (k+1)-bucket distributions. That is exact, not an approximation of the
formula: it *equals* the full-vocabulary divergence against a teacher ``q_T`` that keeps ``p_T`` on ``S`` and
spreads its tail mass over the other tokens in proportion to the student's (``q_T(j) = tail_T * p_S(j) / tail_S``),
because on the tail the ratio ``q_T / p_S`` is then constant, so every sum over the tail collapses to one term:

    forward KL  = sum_S p_T log(p_T / p_S) + tail_T log(tail_T / tail_S)
    reverse KL  = sum_S p_S log(p_S / p_T) + tail_S log(tail_S / tail_T)
    JSD(beta)   = the same (k+1)-bucket JSD (the mixture is proportional on the tail too)

By the data-processing inequality it is never above the true divergence, and it reaches it when k covers the
vocabulary (tests/engine/training/test_chunked_losses.py checks both numerically).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.core import heartbeat
from engine.training.losses import (IGNORE_INDEX, KD, _check_args, _divergence_from_log_probs, _effective_kind,
                                    _head_params, joint_weights)

# log of the smallest positive float32: an empty or underflowed tail bucket, finite so 0 * log 0 terms stay 0
LOG_FLOOR = math.log(torch.finfo(torch.float32).tiny)


def teacher_topk(logits: Tensor, k: int, temperature: float = KD.temperature) -> tuple[Tensor, Tensor, Tensor]:
    """The teacher's top-k targets of some positions: (indices [N, k], log-probs [N, k], tail log-mass [N]).

    Log-probabilities are at temperature T over the full vocabulary; the tail is the log of the mass outside
    the top k (``LOG_FLOOR`` when there is none).
    """
    lp = F.log_softmax(logits.float() / temperature, dim=-1)  # [N, V]
    k = min(k, lp.size(-1))
    top_lp, idx = lp.topk(k, dim=-1)  # [N, k]
    tail = lp.scatter(-1, idx, float("-inf")).logsumexp(-1).clamp_min(LOG_FLOOR)  # [N]
    return idx, top_lp, tail


def _student_buckets(s_lp: Tensor, idx: Tensor) -> Tensor:
    """The student's (k+1)-bucket log-probs [N, k+1]: its own on the teacher's top k, then its remaining mass."""
    top = s_lp.gather(-1, idx)  # [N, k]
    tail = s_lp.scatter(-1, idx, float("-inf")).logsumexp(-1).clamp_min(LOG_FLOOR)  # [N]
    return torch.cat([top, tail.unsqueeze(-1)], dim=-1)


def topk_tail_divergence(student_logits: Tensor, idx: Tensor, t_lp: Tensor, t_tail: Tensor,
                         kind: str = KD.divergence, temperature: float = KD.temperature,
                         beta: float = KD.jsd_beta) -> Tensor:
    """Per-position divergence between cached teacher targets and full student logits [N, V] -> [N]."""
    _check_args(kind, temperature, beta, 0)
    s_lp = F.log_softmax(student_logits.float() / temperature, dim=-1)  # [N, V]
    t_b = torch.cat([t_lp.float(), t_tail.float().clamp_min(LOG_FLOOR).unsqueeze(-1)], dim=-1)  # [N, k+1]
    return _divergence_from_log_probs(t_b, _student_buckets(s_lp, idx.long()), kind, beta)


class _ChunkedHeadLoss(torch.autograd.Function):
    """sum over chunks of ``chunk_fn(logits of the chunk)``; gradients formed chunk by chunk in forward.

    ``chunk_fn(zs [C, V], start, end, want_grad)`` may consume zs in place and returns (loss_sum, ce_sum,
    div_sum, dloss/dzs [C, V] or None), the gradient in closed form (one [C, V] buffer, no autograd graph).
    """

    @staticmethod
    def forward(ctx, hs, ws, bs, chunk_fn, chunk_size, grad_enabled):  # type: ignore[override]
        need_hs, need_ws, need_bs = (n and grad_enabled for n in ctx.needs_input_grad[:3])
        cdtype = torch.float64 if hs.dtype == torch.float64 else torch.float32
        grad_hs = torch.zeros_like(hs, dtype=cdtype) if need_hs else None  # [N, H]
        grad_ws = torch.zeros_like(ws, dtype=cdtype) if need_ws else None  # [V, H]
        grad_bs = torch.zeros_like(bs, dtype=cdtype) if need_bs else None  # [V]
        sums = torch.zeros(3, dtype=cdtype, device=hs.device)  # loss, ce, div
        want = need_hs or need_ws or need_bs
        chunks = -(-hs.size(0) // chunk_size)
        for start in range(0, hs.size(0), chunk_size):
            end = min(start + chunk_size, hs.size(0))
            heartbeat.detail(f"loss chunk {start // chunk_size + 1}/{chunks}")  # progress inside a slow step
            hs_c = hs[start:end].to(ws.dtype)  # [C, H]
            zs = F.linear(hs_c, ws, bs).to(cdtype)  # [C, V]
            loss, ce, div, grad = chunk_fn(zs, start, end, want)
            sums += torch.stack([loss, ce, div]).to(cdtype)
            del zs
            if grad is None:
                continue
            if need_hs:
                grad_hs[start:end] = grad.to(ws.dtype) @ ws
            if need_ws:
                grad_ws.addmm_(grad.T, hs_c.to(cdtype))
            if need_bs:
                grad_bs += grad.sum(0)
        ctx.grads = tuple(None if g is None else g.to(ref.dtype)
                          for g, ref in ((grad_hs, hs), (grad_ws, ws), (grad_bs, bs)))
        ce_sum, div_sum = sums[1].clone(), sums[2].clone()
        ctx.mark_non_differentiable(ce_sum, div_sum)
        return sums[0].to(hs.dtype), ce_sum, div_sum

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce, _grad_div):  # type: ignore[override]
        grads = [None if g is None else g * grad_loss.to(g.dtype) for g in ctx.grads]
        ctx.grads = None
        heartbeat.detail("backward pass")  # autograd continues through the model from here
        return (*grads, None, None, None)


def _ce_terms(zs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token CE [C], its softmax (computed in place in zs) and the log-sum-exp [C]."""
    lse = torch.logsumexp(zs, dim=-1)  # [C]
    ce = lse - zs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return ce, zs.sub_(lse.unsqueeze(-1)).exp_(), lse


def _bucket_terms(z: Tensor, idx: Tensor, t_b: Tensor, kind: str, beta: float) -> tuple[Tensor, Tensor]:
    """Per-token (k+1)-bucket divergence [C] and its gradient with respect to the tempered logits z [C, V].

    Consumes z (it becomes the gradient). With p = softmax(z), P the bucket masses and g = dD/d(log P) (autograd
    on the small [C, k+1] tensor): dD/dz_j = g_b(j) * p_j / P_b(j) - p_j * sum_b g_b.
    """
    z_top = z.gather(-1, idx)  # [C, k]
    lse = torch.logsumexp(z, dim=-1, keepdim=True)  # [C, 1]
    p = z.sub_(lse).exp_()  # [C, V], in place
    p_top = p.gather(-1, idx)  # [C, k]
    p.scatter_(-1, idx, 0.0)
    tail = p.sum(-1)  # [C] the tail mass, summed without cancellation
    with torch.enable_grad():
        s_b = torch.cat([z_top - lse, tail.clamp_min(math.exp(LOG_FLOOR)).log().unsqueeze(-1)], -1)
        s_b = s_b.detach().requires_grad_(True)  # [C, k+1]
        div = _divergence_from_log_probs(t_b.to(s_b.dtype), s_b, kind, beta)
        (g,) = torch.autograd.grad(div.sum(), s_b)
    total = g.sum(-1, keepdim=True)  # [C, 1]
    on_tail = torch.where(tail > math.exp(LOG_FLOOR), g[:, -1] / tail, torch.zeros_like(tail)).unsqueeze(-1)
    grad = p.mul_(on_tail - total)  # tail entries
    grad.scatter_(-1, idx, g[:, :-1] - p_top * total)  # top-k entries
    return div.detach(), grad


def _response_hidden(hidden: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Hidden states that predict a response token and those tokens: ([N, H], [N]) (causal shift)."""
    shifted = labels[:, 1:]  # [B, L-1]
    mask = shifted != IGNORE_INDEX
    return hidden[:, :-1][mask], shifted[mask]


def _cached_response_rows(hidden: Tensor, head: nn.Module | Tensor, labels: Tensor, cached_rows: int
                          ) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """The head's parameters, the response hidden states [N, H] and their targets [N], checked against the
    number of rows of cached teacher targets (one per response position: a mismatch means other data)."""
    ws, bs = _head_params(head)
    hs, targets = _response_hidden(hidden, labels)
    if cached_rows != targets.numel():
        raise ValueError(f"the cached teacher targets cover {cached_rows} positions but the batch has "
                         f"{targets.numel()} response tokens; the cache was built for other data.")
    return ws, bs, hs, targets


def _norm(num_items_in_batch: int | Tensor | None, n_tokens: int) -> float:
    return float(num_items_in_batch) if num_items_in_batch is not None else float(n_tokens)


def chunked_ce_loss(hidden: Tensor, head: nn.Module | Tensor, labels: Tensor, *, chunk_size: int = 256,
                    num_items_in_batch: int | Tensor | None = None) -> Tensor:
    """The causal-LM cross-entropy on response tokens, from the final hidden states [B, L, H].

    Equals ``F.cross_entropy(lm_head(hidden)[:, :-1], labels[:, 1:], ignore_index=-100)`` (or its sum divided by
    ``num_items_in_batch``, as transformers does under gradient accumulation) with the same gradients, while only
    ``chunk_size`` response positions are projected to the vocabulary at once.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    ws, bs = _head_params(head)
    hs, targets = _response_hidden(hidden, labels)
    if targets.numel() == 0:
        return hidden.sum() * 0.0 + ws.sum() * 0.0
    norm = _norm(num_items_in_batch, targets.numel())

    def chunk_fn(zs: Tensor, start: int, end: int, want_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        ce, p, _ = _ce_terms(zs, targets[start:end])  # p: softmax, in place of zs
        loss = ce.sum() / norm
        if not want_grad:
            return loss, loss, loss * 0.0, None
        grad = p.scatter_add_(-1, targets[start:end].unsqueeze(-1), torch.full_like(ce, -1.0).unsqueeze(-1))
        return loss, loss, loss * 0.0, grad.div_(norm)

    loss, _ce, _div = _ChunkedHeadLoss.apply(hs, ws, bs, chunk_fn, chunk_size, torch.is_grad_enabled())
    return loss


def cached_kd_loss(hidden: Tensor, head: nn.Module | Tensor, labels: Tensor, idx: Tensor, t_lp: Tensor,
                   t_tail: Tensor, *, alpha: float = KD.alpha, temperature: float = KD.temperature,
                   divergence: str = KD.divergence, beta: float = KD.jsd_beta, chunk_size: int = 256,
                   num_items_in_batch: int | Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The paper's joint loss (:func:`engine.training.losses.joint_weights`) against cached teacher targets
    (top-k + tail).

    Args:
        hidden: [B, L, H] student's final hidden states; head: its LM head; labels: [B, L] unshifted, -100 off
            the response.
        idx, t_lp, t_tail: the teacher's targets for the batch's response positions in row-major order
            ([N, k], [N, k], [N]), as :func:`teacher_topk` made them at the same temperature.

    Returns:
        (loss, ce, div) like :func:`engine.training.losses.chunked_kd_loss`.
    """
    _check_args(divergence, temperature, beta, 0)
    ws, bs, hs, targets = _cached_response_rows(hidden, head, labels, idx.size(0))
    n = targets.numel()
    if n == 0:
        zero = hidden.sum() * 0.0 + ws.sum() * 0.0
        return zero, zero.detach(), zero.detach()
    norm = _norm(num_items_in_batch, n)
    kind = _effective_kind(divergence, beta)
    ce_coef, div_coef = joint_weights(alpha, temperature, norm)
    idx = idx.to(hs.device).long()
    t_b = torch.cat([t_lp.float(), t_tail.float().clamp_min(LOG_FLOOR).unsqueeze(-1)], dim=-1).to(hs.device)

    def chunk_fn(zs: Tensor, start: int, end: int, want_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        y = targets[start:end]
        z = zs / temperature if temperature != 1.0 else zs.clone()  # [C, V], consumed by _bucket_terms
        div, g_div = _bucket_terms(z, idx[start:end], t_b[start:end], kind, beta)
        ce, p1, _ = _ce_terms(zs, y)  # p1: softmax at T = 1, in place of zs
        ce_sum, div_sum = ce.sum(), div.sum()
        loss = ce_coef * ce_sum + div_coef * div_sum
        if not want_grad:
            return loss, ce_sum, div_sum, None
        grad = p1.mul_(ce_coef).add_(g_div, alpha=div_coef / temperature)  # d s / d z = 1 / T
        grad.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(ce, -ce_coef).unsqueeze(-1))
        return loss, ce_sum, div_sum, grad

    loss, ce_sum, div_sum = _ChunkedHeadLoss.apply(hs, ws, bs, chunk_fn, chunk_size, torch.is_grad_enabled())
    return loss, (ce_sum / n).to(hs.dtype), (div_sum / n).to(hs.dtype)
