"""Benchmark for a GPU: the paper's pair (Qwen2.5-3B teacher, Qwen2.5-0.5B student, configs of the hub models,
random weights) — per precision, a token-KD step's tokens/s, MFU and peak memory, with the live teacher and with
cached top-k targets, and the teacher-cache build's throughput.

A step is what KDTrainer does: both backbones, the joint loss from hidden states in chunks
(engine.training.losses.chunked_kd_loss live; engine.training.chunked_losses.cached_kd_loss from the cache), backward,
AdamW.
MFU = model FLOPs per second / the GPU's dense bf16 peak, with model FLOPs = 6·N_student·tokens (forward and
backward) + 2·N_teacher·tokens (the teacher's forward, live only); attention FLOPs left out (short sequences).

Run on a GPU:  python bench/gpu_kd.py --batch 8 --seq 512 [--precisions bf16-mixed,bf16-pure,fp32]
Check on CPU:  python bench/gpu_kd.py --tiny   (tiny widths at the real vocabulary; no MFU)
Writes JSON lines to stdout and a markdown table to --out (default bench/RESULTS_gpu_kd.md).
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
logger = logging.getLogger("bench.gpu_kd")
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
                    "4090": 165.0, "3090": 71.0}  # dense bf16 tensor-core peaks (SXM where both exist)
PRECISIONS = {"fp32": (torch.float32, None), "bf16-mixed": (torch.float32, torch.bfloat16),
              "bf16-pure": (torch.bfloat16, None)}


def configs(tiny: bool) -> tuple[dict, dict]:
    from engine.models.memory_plan import KNOWN_CONFIGS

    teacher, student = dict(KNOWN_CONFIGS["qwen2.5-3b"]), dict(KNOWN_CONFIGS["qwen2.5-0.5b"])
    if tiny:
        teacher.update(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)
        student.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    return teacher, student


def build(config: dict, dtype: torch.dtype, device: str, seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(**{k: v for k, v in config.items() if k != "model_type"})
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(dtype)
    return model


def peak_tflops(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run(precision: str, args: argparse.Namespace, device: str) -> list[dict]:
    from engine.training.chunked_losses import cached_kd_loss, teacher_topk
    from engine.models.hidden_states import last_hidden_state
    from engine.training.losses import chunked_kd_loss

    weights, autocast = PRECISIONS[precision]
    t_cfg, s_cfg = configs(args.tiny)
    teacher_dtype = torch.float32 if device == "cpu" or precision == "fp32" else torch.bfloat16
    teacher = build(t_cfg, teacher_dtype, device, 1).eval().requires_grad_(False)
    student = build(s_cfg, weights, device, 0)
    if args.checkpointing:
        student.gradient_checkpointing_enable()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5, fused=device == "cuda")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 151_000, (args.batch, args.seq), generator=g).to(device)
    labels = ids.clone()
    labels[:, : args.seq // 2] = -100  # the second half is the response
    mask = torch.ones_like(ids)
    n_resp = int((labels[:, 1:] != -100).sum())
    head_s, head_t = student.get_output_embeddings(), teacher.get_output_embeddings()
    amp = torch.autocast(device_type=device, dtype=autocast) if autocast else torch.autocast(device, enabled=False)

    # the cache for this batch: teacher forward + top-k per response token (what build_targets does per batch)
    def build_cache():
        with torch.no_grad(), amp:
            hidden = last_hidden_state(teacher, ids, mask)[:, :-1][labels[:, 1:] != -100]
            parts = [teacher_topk(head_t(hidden[i:i + 256]), args.top_k) for i in range(0, hidden.size(0), 256)]
        return tuple(torch.cat(p) for p in zip(*parts))

    def step(cached) -> None:
        with amp:
            hs = last_hidden_state(student, ids, mask)
            if cached is None:
                with torch.no_grad():
                    ht = last_hidden_state(teacher, ids, mask)
                loss = chunked_kd_loss(hs, ht, head_s, head_t, labels, chunk_size=args.chunk)[0]
            else:
                loss = cached_kd_loss(hs, head_s, labels, *cached, chunk_size=args.chunk)[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    n_s = sum(p.numel() for p in student.parameters())
    n_t = sum(p.numel() for p in teacher.parameters())
    tokens = args.batch * args.seq
    peak = peak_tflops(device)
    rows = []
    build_cache()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        cache = build_cache()
    _sync(device)
    build_s = (time.perf_counter() - t0) / args.steps
    rows.append({"precision": precision, "what": "cache_build", "tokens_per_s": tokens / build_s,
                 "response_tokens_per_s": n_resp / build_s, "step_s": build_s})
    for what, cached in (("kd_live", None), ("kd_cached", cache)):
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        step(cached)  # warm-up (allocates the optimizer state)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(cached)
        _sync(device)
        step_s = (time.perf_counter() - t0) / args.steps
        flops = 6 * n_s * tokens + (2 * n_t * tokens if cached is None else 0)
        rows.append({"precision": precision, "what": what, "step_s": step_s, "tokens_per_s": tokens / step_s,
                     "mfu": None if peak is None else flops / step_s / (peak * 1e12),
                     "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny widths (a CPU check that the script works)")
    parser.add_argument("--precisions", default="bf16-mixed,bf16-pure,fp32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in the student")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS_gpu_kd.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.tiny and device == "cpu":
        args.batch, args.seq, args.steps = min(args.batch, 2), min(args.seq, 64), min(args.steps, 2)
    machine = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or 'cpu'})"
    rows = []
    for precision in args.precisions.split(","):
        if precision not in PRECISIONS:
            parser.error(f"--precisions: {precision!r} is not one of {', '.join(PRECISIONS)}")
        for row in run(precision, args, device):
            rows.append(row)
            sys.stdout.write(json.dumps(row) + "\n")
        if device == "cuda":
            torch.cuda.empty_cache()
    fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731 - a one-line formatter
    lines = [f"# GPU KD benchmark (bench/gpu_kd.py){' — tiny check' if args.tiny else ''}", "",
             f"- Machine: {machine}; torch {torch.__version__}",
             f"- Command: `python bench/gpu_kd.py {' '.join(sys.argv[1:])}`",
             f"- Work: teacher {'tiny' if args.tiny else 'Qwen2.5-3B'} / "
             f"student {'tiny' if args.tiny else 'Qwen2.5-0.5B'} "
             f"(random weights, vocabulary 151,936), batch {args.batch} x {args.seq} (half response), top-k "
             f"{args.top_k}, chunk {args.chunk}, checkpointing {args.checkpointing}.", "",
             "| precision | what | step (s) | tokens/s | MFU | peak (GB) |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['precision']} | {r['what']} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} "
                     f"| {fmt(r.get('mfu'), '.1%')} | {fmt(r.get('peak_gb'), '.1f')} |")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
