"""Cross-tokenizer distillation loss: Universal Logit Distillation (ULD, Boizard et al. 2024, arXiv 2402.12030),
the loss TRL's experimental GOLD trainer uses when teacher and student tokenize differently.

Two vocabularies cannot be compared token by token, so ULD compares each side's next-token probabilities *by
rank*: sort both descending, pad the shorter vocabulary with zeros, take the L1 distance

    ULD(p_T, p_S) = sum_i | p_S(i) - p_T(i) |        (p(i): the i-th largest probability)

It is invariant to how either side numbers its tokens (a permuted distribution is at distance 0) and it is not a
KL: with one shared vocabulary it does *not* reduce to the token-level divergence but to the L1 distance between
the two sorted probability vectors, which is 0 for identical distributions, never above the plain L1 distance
``sum_j |p_S(j) - p_T(j)|`` (sorting both sides minimises the L1 distance over all pairings) and at most 2.

**Top-k + tail.** The teacher's targets are cached (the teacher runs once, engine/training/teacher_targets.py): its
k largest probabilities and its remaining mass. The student is lumped the same way, its k largest probabilities
and its tail, and the distance is taken over these k + 1 buckets:

    ULD_k = sum_{i<k} | p_S(i) - p_T(i) | + | tail_S - tail_T |

By the triangle inequality ULD_k ≤ ULD, with equality when k covers the vocabulary (tested). A student with
fewer than k tokens has zeros at the ranks it lacks (the padding above).

The joint loss is ``alpha * CE + (1 - alpha) * ULD_k`` with both distributions at temperature T (no T² factor:
that factor compensates the 1/T² shrinking of a KL's gradient, and ULD's does not shrink that way). It is computed
from the student's hidden states a chunk of response positions at a time with the gradient in closed form (as
:mod:`engine.training.chunked_losses` does for the KL), so the [tokens, vocab] logits of a batch never exist;
bench/RESULTS.md §cross-tokenizer measures this against TRL's ULDLoss, which needs both models' full logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.training.chunked_losses import LOG_FLOOR, _cached_response_rows, _ce_terms, _ChunkedHeadLoss, _norm
from engine.training.losses import KD, _check_args, joint_weights


def uld_reference(student_probs: Tensor, teacher_probs: Tensor) -> Tensor:
    """ULD per position from full distributions [N, Vs], [N, Vt] -> [N]: sort, pad with zeros, L1 (readable
    reference; the training path is :func:`cached_uld_loss`)."""
    s = student_probs.sort(dim=-1, descending=True).values
    t = teacher_probs.sort(dim=-1, descending=True).values
    width = max(s.size(-1), t.size(-1))
    s, t = F.pad(s, (0, width - s.size(-1))), F.pad(t, (0, width - t.size(-1)))
    return (s - t).abs().sum(-1)


def teacher_buckets(t_lp: Tensor, t_tail: Tensor) -> tuple[Tensor, Tensor]:
    """Cached teacher targets as probabilities: (top-k sorted descending [N, k], tail mass [N])."""
    t_top = t_lp.float().exp().sort(dim=-1, descending=True).values
    return t_top, t_tail.float().exp().masked_fill(t_tail.float() <= LOG_FLOOR, 0.0)


def uld_topk(student_logits: Tensor, t_lp: Tensor, t_tail: Tensor, temperature: float = KD.temperature) -> Tensor:
    """ULD_k per position between full student logits [N, V] and cached teacher targets (top-k log-probs
    [N, k], tail log-mass [N], as :func:`engine.training.chunked_losses.teacher_topk` makes them) -> [N]."""
    z = student_logits.float() / temperature
    t_top, t_tail_p = teacher_buckets(t_lp, t_tail)
    return _uld_terms(z, t_top.to(z.device), t_tail_p.to(z.device), want_grad=False)[0]


def _uld_terms(z: Tensor, t_top: Tensor, t_tail: Tensor, want_grad: bool) -> tuple[Tensor, Tensor | None]:
    """ULD_k per position [C] and its gradient with respect to the tempered logits z [C, V] (z is consumed).

    With p = softmax(z), dULD/dp_j is sign(p_S(i) - p_T(i)) for the student's i-th largest token j and
    sign(tail_S - tail_T) for every token in its tail; the softmax Jacobian gives dULD/dz = p * (g - sum p*g).
    """
    k = min(t_top.size(-1), z.size(-1))
    p = z.sub_(z.logsumexp(-1, keepdim=True)).exp_()  # [C, V] softmax, in place
    top, idx = p.topk(k, dim=-1)  # [C, k], sorted descending
    p.scatter_(-1, idx, 0.0)
    tail = p.sum(-1)  # [C] the student's tail, summed without cancellation
    gap_top = top - t_top[:, :k]
    beyond = t_top[:, k:].sum(-1)  # teacher ranks the student has no token for: constant distance
    div = gap_top.abs().sum(-1) + beyond + (tail - t_tail).abs()
    if not want_grad:
        return div, None
    g_top, g_tail = gap_top.sign(), (tail - t_tail).sign().unsqueeze(-1)  # [C, k], [C, 1]
    mean_g = (top * g_top).sum(-1, keepdim=True) + tail.unsqueeze(-1) * g_tail  # [C, 1]
    grad = p.mul_(g_tail - mean_g)  # tail entries (top entries are 0 in p here)
    grad.scatter_(-1, idx, top * (g_top - mean_g))
    return div, grad


def cached_uld_loss(hidden: Tensor, head: nn.Module | Tensor, labels: Tensor, t_lp: Tensor, t_tail: Tensor,
                    valid: Tensor | None = None, *, alpha: float = KD.alpha, temperature: float = KD.temperature,
                    chunk_size: int = 256, num_items_in_batch: int | Tensor | None = None
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """The joint loss ``alpha·CE + (1−alpha)·ULD_k`` against the teacher's cached, aligned targets.

    Args:
        hidden: [B, L, H] the student's final hidden states; head: its LM head; labels: [B, L] unshifted, -100
            off the response.
        t_lp, t_tail: the teacher's top-k log-probabilities [N, k] and tail log-mass [N] at temperature T, one
            row per student response position in row-major order (engine/training/cross_tokenizer.py aligns them).
        valid: [N] bool, False where no teacher position matches (a truncated teacher row): CE only there.

    Returns:
        (loss, ce, div): loss differentiable; ce and div detached per-token means for logging.
    """
    _check_args(KD.divergence, temperature, KD.jsd_beta, 0)  # the spec's check of the temperature
    ws, bs, hs, targets = _cached_response_rows(hidden, head, labels, t_lp.size(0))
    n = targets.numel()
    if n == 0:
        zero = hidden.sum() * 0.0 + ws.sum() * 0.0
        return zero, zero.detach(), zero.detach()
    norm = _norm(num_items_in_batch, n)
    ce_coef, div_coef = joint_weights(alpha, 1.0, norm)  # the joint weights without the T² factor (see above)
    t_top, t_tail_p = (x.to(hs.device) for x in teacher_buckets(t_lp, t_tail))
    weight = (torch.ones(n) if valid is None else valid.float()).to(hs.device)  # [N]

    def chunk_fn(zs: Tensor, start: int, end: int, want_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        y, w = targets[start:end], weight[start:end].to(zs.dtype)
        z = zs / temperature if temperature != 1.0 else zs.clone()  # [C, V], consumed by _uld_terms
        div, g_div = _uld_terms(z, t_top[start:end].to(zs.dtype), t_tail_p[start:end].to(zs.dtype), want_grad)
        div = div * w
        ce, p1, _ = _ce_terms(zs, y)  # p1: softmax at T = 1, in place of zs
        ce_sum, div_sum = ce.sum(), div.sum()
        loss = ce_coef * ce_sum + div_coef * div_sum
        if not want_grad:
            return loss, ce_sum, div_sum, None
        grad = p1.mul_(ce_coef).add_(g_div.mul_(w.unsqueeze(-1)), alpha=div_coef / temperature)  # ds/dz = 1/T
        grad.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(ce, -ce_coef).unsqueeze(-1))
        return loss, ce_sum, div_sum, grad

    loss, ce_sum, div_sum = _ChunkedHeadLoss.apply(hs, ws, bs, chunk_fn, chunk_size, torch.is_grad_enabled())
    n_valid = max(float(weight.sum()), 1.0)
    return loss, (ce_sum / n).to(hs.dtype), (div_sum / n_valid).to(hs.dtype)

