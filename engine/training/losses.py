"""Knowledge-distillation losses: the paper's joint loss, exact and in memory-saving chunks.

The paper (arXiv 2603.13765) trains the student on response tokens with

    L = alpha * CE(y, p_S) + (1 - alpha) * T^2 * D(p_T^(T) || p_S^(T))

where ``p^(T)`` is a softmax at temperature T and D is a divergence between the teacher's and the student's
next-token distributions. This module gives

* :func:`divergence` – per-token D for ``forward_kl``, ``reverse_kl`` or the generalized ``jsd`` (beta);
* :func:`joint_weights` – the weights of its two terms, the one place the formula is written;
* :func:`kd_joint_loss` – the joint loss from full logits (the readable reference);
* :func:`chunked_kd_loss` – the same loss from the *hidden states* and the two LM heads. It keeps only the response
  positions and projects them to the vocabulary a chunk at a time; the gradient of each chunk with respect to the
  student's logits is computed in the same pass (as Liger's fused linear cross-entropy does), so neither model's
  full ``[tokens, vocab]`` logits exist at once, in forward or in backward, and no chunk is projected twice.

Conventions (documented because papers and libraries differ):

* JSD(beta) follows TRL's ``generalized_jsd_loss`` and the GKD paper (arXiv 2306.13649, Eq. 1): with the mixture
  ``m = beta * p_T + (1 - beta) * p_S``, ``JSD(beta) = beta * KL(p_T || m) + (1 - beta) * KL(p_S || m)``.
  Its limits vanish (JSD/beta -> KL(p_T||p_S) as beta -> 0, JSD/(1-beta) -> KL(p_S||p_T) as beta -> 1), so, as in
  TRL, ``beta == 0`` *means* the forward KL and ``beta == 1`` the reverse KL exactly.
* The CE term uses the student's distribution at temperature 1; only the divergence is tempered.
* ``top_k > 0`` keeps the teacher's k most likely tokens per position. The teacher's distribution is renormalised
  on that support and the student's logits are gathered on the same k tokens and renormalised too, so D compares
  two proper distributions on one support: every kind stays >= 0, is 0 when they agree there, and the reverse KL
  and JSD remain defined (an unrenormalised student would make the reverse KL meaningless). ``top_k >= vocab``
  is the full distribution.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.contract.stage_specs import DistillSpec
from engine.core import heartbeat
from engine.training_data.formatting import IGNORE_INDEX  # re-exported to the loss modules

DivergenceKind = str  # one of engine.contract.vocabulary.DIVERGENCES (the spec's vocabulary, one home)
KD = DistillSpec()  # the default of every KD setting below (alpha, T, divergence, beta, top-k), one home


@lru_cache(maxsize=64)
def _check_args(kind: str, temperature: float, beta: float, top_k: int) -> None:
    """The spec's own checks of these settings (a SpecError, which is a ValueError, naming the setting): a loss
    called from code is held to the rules a spec is, written once in DistillSpec."""
    DistillSpec(divergence=kind, temperature=temperature, jsd_beta=beta, top_k=top_k)


def joint_weights(alpha: float, temperature: float, tokens: float = 1.0) -> tuple[float, float]:
    """(w_ce, w_div) of the paper's joint loss ``L = w_ce * CE + w_div * D``: ``alpha / tokens`` and
    ``(1 - alpha) * T^2 / tokens``, ``tokens`` being what the summed per-token terms are divided by (1 for means).

    The one place the formula is written: the full-logit reference, the chunked loss and the loss against cached
    teacher targets all weigh their terms with it. T² keeps the divergence's gradient on the scale of the CE's
    as T grows (Hinton et al., 2015)."""
    return alpha / tokens, (1.0 - alpha) * temperature**2 / tokens


def _tempered_log_probs(
    teacher_logits: Tensor, student_logits: Tensor, temperature: float, top_k: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Log-softmax of both at temperature T, on the teacher's top-k support when asked.

    Returns (teacher_log_probs [N, K], student_log_probs [N, K], indices [N, K] or None); K = V without top-k.
    """
    t = teacher_logits / temperature  # [N, V]
    s = student_logits / temperature  # [N, V]
    idx = None
    if 0 < top_k < t.size(-1):
        idx = t.topk(top_k, dim=-1).indices  # [N, k]
        t, s = t.gather(-1, idx), s.gather(-1, idx)
    return F.log_softmax(t, dim=-1), F.log_softmax(s, dim=-1), idx


def _effective_kind(kind: str, beta: float) -> str:
    """JSD at beta 0 or 1 is, by the TRL convention, the forward or reverse KL."""
    if kind == "jsd" and beta in (0.0, 1.0):
        return "forward_kl" if beta == 0.0 else "reverse_kl"
    return kind


def _divergence_from_log_probs(t_lp: Tensor, s_lp: Tensor, kind: str, beta: float) -> Tensor:
    """Per-token D(p_T || p_S) from log-probabilities on one support: [N, K] -> [N]."""
    kind = _effective_kind(kind, beta)
    if kind == "forward_kl":
        return (t_lp.exp() * (t_lp - s_lp)).sum(-1)
    if kind == "reverse_kl":
        return (s_lp.exp() * (s_lp - t_lp)).sum(-1)
    log_m = torch.logaddexp(t_lp + math.log(beta), s_lp + math.log1p(-beta))  # [N, K]
    kl_t = (t_lp.exp() * (t_lp - log_m)).sum(-1)
    kl_s = (s_lp.exp() * (s_lp - log_m)).sum(-1)
    return beta * kl_t + (1.0 - beta) * kl_s


def divergence(
    teacher_logits: Tensor,
    student_logits: Tensor,
    kind: DivergenceKind = KD.divergence,
    temperature: float = KD.temperature,
    beta: float = KD.jsd_beta,
    top_k: int = KD.top_k,
) -> Tensor:
    """Per-token divergence D(p_T^(T) || p_S^(T)) between next-token distributions.

    Args:
        teacher_logits: [..., V] raw teacher logits.
        student_logits: [..., V] raw student logits (gradients flow through these).
        kind: ``forward_kl`` = KL(p_T||p_S), ``reverse_kl`` = KL(p_S||p_T), ``jsd`` = generalized JSD(beta).
        temperature: softmax temperature T applied to both.
        beta: JSD interpolation (TRL/GKD convention, see the module docstring); ignored for the KLs.
        top_k: 0 for the full vocabulary, else the teacher's top-k support (both renormalised).

    Returns:
        [...] divergence per position, in nats.
    """
    _check_args(kind, temperature, beta, top_k)
    lead = teacher_logits.shape[:-1]
    t = teacher_logits.reshape(-1, teacher_logits.size(-1))
    s = student_logits.reshape(-1, student_logits.size(-1))
    t_lp, s_lp, _ = _tempered_log_probs(t, s, temperature, top_k)
    return _divergence_from_log_probs(t_lp, s_lp, kind, beta).reshape(lead)


def _response_positions(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Causal shift: position i predicts labels[i + 1]. Returns (mask [B, L-1], targets [N])."""
    shifted = labels[:, 1:]  # [B, L-1]
    mask = shifted != IGNORE_INDEX
    return mask, shifted[mask]


def kd_joint_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float = KD.alpha,
    temperature: float = KD.temperature,
    divergence_kind: DivergenceKind = KD.divergence,
    beta: float = KD.jsd_beta,
    top_k: int = KD.top_k,
) -> tuple[Tensor, Tensor, Tensor]:
    """The joint loss from full logits (reference implementation; materialises both [B, L, V]).

    Args:
        student_logits: [B, L, V]; teacher_logits: [B, L, V]; labels: [B, L] with -100 on prompt and padding,
            *unshifted* like a causal LM's labels.

    Returns:
        (loss, ce, div): scalars; ce and div are per-token means over response tokens, and
        loss = alpha * ce + (1 - alpha) * T^2 * div.
    """
    _check_args(divergence_kind, temperature, beta, top_k)
    mask, targets = _response_positions(labels)
    s = student_logits[:, :-1][mask]  # [N, V]
    t = teacher_logits[:, :-1][mask].detach()  # [N, V]
    if targets.numel() == 0:  # keep the graph so backward works on an all-prompt batch
        zero = student_logits.sum() * 0.0
        return zero, zero.detach(), zero.detach()
    ce = F.cross_entropy(s, targets)
    div = divergence(t, s, divergence_kind, temperature, beta, top_k).mean()
    w_ce, w_div = joint_weights(alpha, temperature)
    loss = w_ce * ce + w_div * div
    return loss, ce, div


def _head_params(head: nn.Module | Tensor) -> tuple[Tensor, Tensor | None]:
    """(weight [V, H], bias [V] or None) of an LM head given as a module (nn.Linear) or a bare weight."""
    if isinstance(head, nn.Module):
        return head.weight, getattr(head, "bias", None)
    return head, None


def _divergence_and_grad(t_lp: Tensor, s_lp: Tensor, kind: str, beta: float) -> tuple[Tensor, Tensor]:
    """Per-token D [C] and dD/ds [C, K], s being the student's tempered logits on the support.

    Closed forms (softmax Jacobian applied): forward KL p_s - p_t; reverse KL p_s * (log p_s - log p_t - D);
    JSD(beta) (1 - beta) * p_s * (log p_s - log m - KL(p_s || m)).
    """
    kind = _effective_kind(kind, beta)
    p_s = s_lp.exp()  # [C, K]
    if kind == "forward_kl":
        p_t = t_lp.exp()
        div = (p_t * (t_lp - s_lp)).sum(-1)
        return div, p_s.sub_(p_t)
    if kind == "reverse_kl":
        gap = s_lp - t_lp  # [C, K]
        div = (p_s * gap).sum(-1)
        return div, p_s.mul_(gap.sub_(div.unsqueeze(-1)))
    log_m = torch.logaddexp(t_lp + math.log(beta), s_lp + math.log1p(-beta))  # [C, K]
    kl_t = (t_lp.exp() * (t_lp - log_m)).sum(-1)
    gap = s_lp - log_m
    kl_s = (p_s * gap).sum(-1)
    grad = p_s.mul_(gap.sub_(kl_s.unsqueeze(-1))).mul_(1.0 - beta)
    return beta * kl_t + (1.0 - beta) * kl_s, grad


def _chunk_terms(
    zs: Tensor, zt: Tensor, targets: Tensor, settings: dict, want_grad: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """CE and D per token of one chunk and, if wanted, d(weighted loss)/d(student logits).

    zs, zt: [C, V] student / teacher logits in the compute dtype; targets: [C].
    Returns (ce [C], div [C], grad [C, V] or None), the gradient already weighted by the loss coefficients.
    """
    temperature, top_k = settings["temperature"], settings["top_k"]
    s_lp1 = F.log_softmax(zs, dim=-1)  # [C, V] at T = 1, for the CE term
    ce = -s_lp1.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if temperature == 1.0 and not 0 < top_k < zs.size(-1):
        t_lp, s_lp, idx = F.log_softmax(zt, dim=-1), s_lp1, None  # reuse: no second vocab-wide softmax
    else:
        t_lp, s_lp, idx = _tempered_log_probs(zt, zs, temperature, top_k)
    del zt
    div, g_div = _divergence_and_grad(t_lp, s_lp, settings["kind"], settings["beta"])
    if not want_grad:
        return ce, div, None
    grad = s_lp1.exp_()  # softmax; dCE/dz = p - onehot(y)
    grad.scatter_add_(-1, targets.unsqueeze(-1), torch.full_like(ce, -1.0).unsqueeze(-1))
    grad.mul_(settings["ce_coef"])
    g_div.mul_(settings["div_coef"] / temperature)  # d s / d z = 1 / T
    if idx is None:
        grad.add_(g_div)
    else:
        grad.scatter_add_(-1, idx, g_div)
    return ce, div, grad


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise dot product [C, V] x [C, V] -> [C] as a batched matmul (no [C, V] temporary)."""
    return (a.unsqueeze(1) @ b.unsqueeze(-1)).view(-1)


def _kl_chunk_terms(
    zs: Tensor, zt: Tensor, targets: Tensor, settings: dict, want_grad: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """:func:`_chunk_terms` for the forward/reverse KL on the full vocabulary, lean in memory passes.

    Works in place on zs and zt (both consumed) with one extra [C, V] buffer (two when T != 1), using
    log p = z / T - logsumexp(z / T): forward KL = sum p_t * gap + lse_s - lse_t and reverse KL =
    lse_t - lse_s - sum p_s * gap, where gap = (zt - zs) / T.
    """
    temperature, reverse = settings["temperature"], settings["kind"] == "reverse_kl"
    lse1 = torch.logsumexp(zs, dim=-1)  # [C], student at T = 1 for the CE term
    ce = lse1 - zs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    gap = torch.sub(zt, zs)  # [C, V]
    if temperature != 1.0:
        gap.div_(temperature)
        zt.div_(temperature)
        zs_t = zs / temperature  # [C, V]; zs itself stays for the T = 1 softmax
        lse_s = torch.logsumexp(zs_t, dim=-1)
    else:
        zs_t, lse_s = zs, lse1
    lse_t = torch.logsumexp(zt, dim=-1)
    p_t = zt.sub_(lse_t.unsqueeze(-1)).exp_()  # [C, V] teacher probabilities at T
    if not (reverse or want_grad):
        return ce, _rowdot(p_t, gap) + lse_s - lse_t, None
    p_s = zs_t.sub_(lse_s.unsqueeze(-1)).exp_()  # [C, V] student probabilities at T
    div = lse_t - lse_s - _rowdot(p_s, gap) if reverse else _rowdot(p_t, gap) + lse_s - lse_t
    if not want_grad:
        return ce, div, None
    k = settings["div_coef"] / temperature  # weight of dD/ds, with ds/dz = 1 / T
    ce_coef = settings["ce_coef"]
    p1 = p_s if temperature == 1.0 else zs.sub_(lse1.unsqueeze(-1)).exp_()  # [C, V] softmax at T = 1
    if reverse:  # dD/ds = p_s * (lse_t - lse_s - gap - D)
        g_div = gap.neg_().add_((lse_t - lse_s - div).unsqueeze(-1)).mul_(p_s)
        grad = p1.mul_(ce_coef).add_(g_div, alpha=k)
    elif p1 is p_s:  # forward KL at T = 1: (ce_coef + k) * p - k * p_t
        grad = p1.mul_(ce_coef + k).sub_(p_t, alpha=k)
    else:
        grad = p1.mul_(ce_coef).add_(p_s, alpha=k).sub_(p_t, alpha=k)
    grad.scatter_add_(-1, targets.unsqueeze(-1), torch.full_like(ce, -ce_coef).unsqueeze(-1))
    return ce, div, grad


class _FusedChunkedKD(torch.autograd.Function):
    """Joint KD loss over response positions; the gradients are formed chunk by chunk during the forward pass.

    Forward returns (loss, ce_sum, div_sum); only ``loss`` is differentiable. Backward only rescales the stored
    gradients by the incoming scalar, so no [N, V] tensor survives the forward call.
    """

    @staticmethod
    def forward(ctx, hs, ws, bs, ht, wt, bt, targets, settings):  # type: ignore[override]
        # needs_input_grad stays True under torch.no_grad(), hence the grad mode recorded by the caller
        need_hs, need_ws, need_bs = (n and settings["grad_enabled"] for n in ctx.needs_input_grad[:3])
        want_grad = need_hs or need_ws or need_bs
        cdtype = torch.float64 if hs.dtype == torch.float64 else torch.float32  # softmax and gradient dtype
        grad_hs = torch.zeros_like(hs, dtype=cdtype) if need_hs else None  # [N, H]
        grad_ws = torch.zeros_like(ws, dtype=cdtype) if need_ws else None  # [V, H], summed in fp32 at least
        grad_bs = torch.zeros_like(bs, dtype=cdtype) if need_bs else None  # [V]
        ce_sum = hs.new_zeros((), dtype=cdtype)
        div_sum = hs.new_zeros((), dtype=cdtype)
        size = settings["chunk_size"]
        full_vocab = not 0 < settings["top_k"] < ws.size(0)
        terms = _kl_chunk_terms if full_vocab and settings["kind"] != "jsd" else _chunk_terms
        chunks = -(-hs.size(0) // size)
        for start in range(0, hs.size(0), size):
            heartbeat.detail(f"loss chunk {start // size + 1}/{chunks}")  # progress inside a slow step
            hs_c = hs[start : start + size].to(ws.dtype)  # [C, H]
            # logits in the heads' own dtype, as the models compute them, upcast for the softmaxes
            zs = F.linear(hs_c, ws, bs).to(cdtype)  # [C, V]
            zt = F.linear(ht[start : start + size].to(wt.dtype), wt, bt).to(cdtype)  # [C, V]
            ce, div, grad = terms(zs, zt, targets[start : start + size], settings, want_grad)
            del zs, zt
            ce_sum += ce.sum()
            div_sum += div.sum()
            if grad is None:
                continue
            if need_hs:
                grad_hs[start : start + size] = grad.to(ws.dtype) @ ws
            if need_ws:
                grad_ws.addmm_(grad.T, hs_c.to(cdtype))
            if need_bs:
                grad_bs += grad.sum(0)
        ctx.grads = (
            None if grad_hs is None else grad_hs.to(hs.dtype),
            None if grad_ws is None else grad_ws.to(ws.dtype),
            None if grad_bs is None else grad_bs.to(bs.dtype),
        )
        loss = settings["ce_coef"] * ce_sum + settings["div_coef"] * div_sum
        ctx.mark_non_differentiable(ce_sum, div_sum)
        return loss.to(hs.dtype), ce_sum, div_sum

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce, _grad_div):  # type: ignore[override]
        grads = [None if g is None else g * grad_loss.to(g.dtype) for g in ctx.grads]
        ctx.grads = None
        heartbeat.detail("backward pass")  # autograd continues through the model from here
        return (*grads, None, None, None, None, None)


def chunked_kd_loss(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    student_head: nn.Module | Tensor,
    teacher_head: nn.Module | Tensor,
    labels: Tensor,
    *,
    alpha: float = KD.alpha,
    temperature: float = KD.temperature,
    divergence: DivergenceKind = KD.divergence,
    beta: float = KD.jsd_beta,
    top_k: int = KD.top_k,
    chunk_size: int = 256,
    num_items_in_batch: int | Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`kd_joint_loss` from final hidden states, never holding full-vocabulary logits of the batch.

    Args:
        student_hidden: [B, L, H] student's last hidden state (after the final norm), differentiable.
        teacher_hidden: [B, L, Ht] teacher's last hidden state (treated as a constant).
        student_head, teacher_head: the LM heads (nn.Linear or weight [V, H]); vocabularies must match.
        labels: [B, L] unshifted, -100 on prompt and padding.
        chunk_size: response tokens projected at once; peak extra memory is about 4 * chunk_size * V floats.
        num_items_in_batch: when given (gradient accumulation), the loss is the token *sum* divided by it, so the
            micro-batches add up to the mean over the whole accumulated batch; otherwise the local token mean.

    Returns:
        (loss, ce, div): loss is differentiable; ce and div are detached local per-token means, for logging.
    """
    _check_args(divergence, temperature, beta, top_k)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    ws, bs = _head_params(student_head)
    wt, bt = _head_params(teacher_head)
    if ws.size(0) != wt.size(0):
        raise ValueError(f"Student vocabulary ({ws.size(0)}) and teacher vocabulary ({wt.size(0)}) differ.")
    mask, targets = _response_positions(labels)
    n_tokens = targets.numel()
    if n_tokens == 0:
        zero = student_hidden.sum() * 0.0 + ws.sum() * 0.0
        return zero, zero.detach(), zero.detach()
    hs = student_hidden[:, :-1][mask]  # [N, H]
    ht = teacher_hidden[:, :-1][mask].detach()  # [N, Ht]
    norm = float(num_items_in_batch) if num_items_in_batch is not None else float(n_tokens)
    ce_coef, div_coef = joint_weights(alpha, temperature, norm)
    settings = {
        "temperature": float(temperature),
        "top_k": int(top_k),
        "kind": _effective_kind(divergence, beta),
        "beta": float(beta),
        "chunk_size": int(chunk_size),
        "grad_enabled": torch.is_grad_enabled(),
        "ce_coef": ce_coef,
        "div_coef": div_coef,
    }
    loss, ce_sum, div_sum = _FusedChunkedKD.apply(hs, ws, bs, ht, wt.detach(), bt, targets, settings)
    return loss, (ce_sum / n_tokens).to(hs.dtype), (div_sum / n_tokens).to(hs.dtype)
