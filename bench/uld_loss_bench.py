"""Memory and time of one ULD loss step at Qwen's vocabulary on CPU: TRL's GOLD ``ULDLoss`` (both models' full
[B, L, V] logits, full sort) vs this project's ``cached_uld_loss`` (the teacher's cached top-k + tail, the student's
logits a chunk of positions at a time, closed-form gradient). Each variant runs in a fresh process so its peak
resident memory is its own (not a test: run by hand).

    python bench/uld_loss_bench.py --batch 2 --length 256

prints one markdown row per variant: forward + backward seconds (median of 3) and the process's peak RSS above
what the inputs alone take.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

HIDDEN, STUDENT_VOCAB, TEACHER_VOCAB, TOP_K = 896, 151_936, 128_256, 64  # Qwen2.5-0.5B student, Llama-3 teacher


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(variant: str, batch: int, length: int) -> dict:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    hidden = torch.randn(batch, length, HIDDEN) * 0.5
    head = torch.randn(STUDENT_VOCAB, HIDDEN) * 0.05
    labels = torch.randint(0, STUDENT_VOCAB, (batch, length))
    labels[:, :8] = -100
    n = int((labels[:, 1:] != -100).sum())
    if variant == "trl":
        from types import SimpleNamespace

        from trl.experimental.gold.gold_trainer import ULDLoss

        teacher_logits = torch.randn(batch, length, TEACHER_VOCAB) * 3
        config = SimpleNamespace(uld_crossentropy_weight=0.5, uld_distillation_weight=0.5,
                                 uld_student_temperature=1.0, uld_teacher_temperature=1.0,
                                 uld_skip_student_eos=False, uld_skip_teacher_eos=False, use_extended_uld=False,
                                 uld_token_merge_strategy="observed")
        loss_fn = ULDLoss(config)
        ids = torch.zeros(batch, length, dtype=torch.long)
    else:
        from engine.training.chunked_losses import teacher_topk
        from engine.training.uld_loss import cached_uld_loss

        _, t_lp, t_tail = teacher_topk(torch.randn(n, 512) * 3, TOP_K)  # stands for the cache's [N, k] rows
    h, w = hidden.requires_grad_(True), head.requires_grad_(True)
    base = _rss_mb()
    times = []
    for _ in range(3):
        h.grad = w.grad = None
        start = time.perf_counter()
        if variant == "trl":
            loss = loss_fn(h @ w.T, teacher_logits, labels, labels, ids, ids)
        else:
            loss = cached_uld_loss(h, w, labels, t_lp, t_tail, alpha=0.5, chunk_size=256)[0]
        loss.backward()
        times.append(time.perf_counter() - start)
    return {"variant": variant, "seconds": statistics.median(times), "peak_mb_above_inputs": _rss_mb() - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--variant", choices=("trl", "ours"))
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(one(args.variant, args.batch, args.length)))  # read by the parent
        return
    print(f"| variant (B={args.batch}, L={args.length}, V_s={STUDENT_VOCAB:,}, V_t={TEACHER_VOCAB:,}) | "
          "fwd+bwd s | peak MB above inputs |")
    print("|---|---|---|")
    for variant in ("trl", "ours"):
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--batch", str(args.batch),
                              "--length", str(args.length)], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {variant} | {row['seconds']:.2f} | {row['peak_mb_above_inputs']:.0f} |")


if __name__ == "__main__":
    main()
