"""Benchmark: the teacher that runs once, and cheap SFT, at Qwen's real vocabulary (151,936) on CPU.

Side by side in one run, each variant in a fresh subprocess (so its peak memory is its own):

  sft_default   transformers Trainer, the model's own loss (the batch's full [B, L, V] logits)
  sft_chunked   engine.training.kd_trainer.ChunkedSFTTrainer (cross-entropy in chunks of response positions)
  build         the teacher-targets cache built for the data (top-k 64 + tail): throughput in tokens/s
  kd_live       KDTrainer with the live teacher (loaded, run every step)
  kd_cached     KDTrainer reading the cache built above (the teacher is never loaded)
  sweep_live    a 3-point learning-rate sweep, live teacher (loaded once, as the recipe does)
  sweep_cached  the same sweep reading the cache (its build time added to the total)

Models: tiny Qwen2 with random weights at the real vocabulary, tied embeddings: student 128 wide / 2 layers,
teacher 768 wide / 3 layers, so that a teacher forward costs what it costs relative to a student training step
in the paper's 3B -> 0.5B pair (about 2x; see STUDENT, TEACHER). Data: 3 batches of 4 x 256 tokens, the second half of
each row the response. A step is
training_step + AdamW step; step time is the median after one warm-up step; memory is the peak RSS (1 ms
sampling) above the RSS before the step ("step"), and above the RSS right after the imports ("total": weights,
optimizer state and the step).

Run: python bench/kd_cache.py  (writes bench/RESULTS_kd_cache.md, with the break-even point in steps)
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from kd_step import PeakRSS, _machine, _revision  # noqa: E402 - after the sys.path lines above

VARIANTS = ("sft_default", "sft_chunked", "build", "kd_live", "kd_cached", "sweep_live", "sweep_cached")
VOCAB, BATCH, SEQ, PROMPT, BATCHES, TOP_K = 151_936, 4, 256, 128, 3, 64
SWEEP = (1e-4, 3e-4, 1e-3)
# At this vocabulary the LM heads dominate both models' cost, so the widths set the compute ratio: a teacher
# forward per token (2·V·768) over a student training step (6·V·128) is 2.0, as for Qwen2.5-3B over 0.5B
# (2·3.09 B / 6·0.49 B = 2.1).
STUDENT, TEACHER = (128, 2), (768, 3)
logger = logging.getLogger("bench.kd_cache")


def _model(hidden: int, layers: int, seed: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(
        vocab_size=VOCAB, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ, tie_word_embeddings=True,
        pad_token_id=0, eos_token_id=1))


def _rows() -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, VOCAB, (BATCH * BATCHES, SEQ), generator=g).tolist()
    return [{"input_ids": r, "attention_mask": [1] * SEQ, "labels": [-100] * PROMPT + r[PROMPT:], "row": i}
            for i, r in enumerate(ids)]


def _args(lr: float = 1e-4):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir="/tmp/kd_cache_bench_out", report_to="none", use_cpu=True,
                             save_strategy="no", learning_rate=lr, per_device_train_batch_size=BATCH,
                             disable_tqdm=True, remove_unused_columns=False)


def _targets(folder: Path):
    from engine.training.teacher_targets import TeacherTargets

    import numpy as np

    arrays = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in ("offsets", "indices", "logprobs", "tail")}
    return TeacherTargets(root=folder, meta={}, **arrays)


def _trainer(variant: str, lr: float, cache: Path, teacher=None):
    from transformers import Trainer

    from engine.contract.spec import DistillSpec
    from engine.training.kd_trainer import ChunkedSFTTrainer, KDTrainer

    student = _model(*STUDENT, seed=0)
    settings = DistillSpec(alpha=0.5, temperature=1.0, divergence="forward_kl", chunk_size=256)
    if variant == "sft_default":
        return Trainer(model=student, args=_args(lr))
    if variant == "sft_chunked":
        return ChunkedSFTTrainer(model=student, args=_args(lr), chunk_size=256)
    if "live" in variant:
        return KDTrainer(model=student, teacher_model=teacher, kd_settings=settings, args=_args(lr))
    return KDTrainer(model=student, kd_settings=settings, teacher_targets=_targets(cache), args=_args(lr))


def _steps(trainer, batches: list[dict], sampler: PeakRSS) -> tuple[list[float], float]:
    """Warm-up on the first batch, then one timed step per batch; returns (times, step peak above pre-step)."""
    trainer.current_gradient_accumulation_steps = 1
    model, optimizer = trainer.model, trainer.create_optimizer()

    def step(batch: dict) -> None:
        trainer.training_step(model, batch, None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(batches[0])
    before = sampler.now()
    sampler.peak = before
    times = []
    for batch in batches:
        t0 = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - t0)
    return times, sampler.peak - before


def run_variant(variant: str, cache: Path) -> dict:
    import torch

    from engine.training_data.collate import pad_collator

    torch.set_num_threads(2)
    rows = _rows()
    collate = pad_collator(0)
    batches = [collate(rows[i:i + BATCH]) for i in range(0, len(rows), BATCH)]
    if "cached" not in variant and "live" not in variant:
        batches = [{k: v for k, v in b.items() if k != "row"} for b in batches]
    with PeakRSS() as sampler:
        base = sampler.now()
        if variant == "build":
            from engine.training.teacher_targets import build_targets

            teacher = _model(*TEACHER, seed=1).eval().requires_grad_(False)
            t0 = time.perf_counter()
            build_targets(teacher, rows, cache, top_k=TOP_K, temperature=1.0, batch_size=BATCH, device="cpu",
                          pad_id=0)
            took = time.perf_counter() - t0
            tokens = BATCH * BATCHES * (SEQ - PROMPT)
            return {"variant": variant, "build_s": took, "tokens_per_s": tokens / took,
                    "total_mb": (sampler.peak - base) / 2**20}
        teacher = _model(*TEACHER, seed=1).eval().requires_grad_(False) if "live" in variant else None
        if variant.startswith("sweep"):
            t0 = time.perf_counter()
            for lr in SWEEP:
                trainer = _trainer(variant, lr, cache, teacher)
                _steps(trainer, batches, sampler)
                del trainer
                gc.collect()
            return {"variant": variant, "sweep_s": time.perf_counter() - t0, "total_mb": (sampler.peak - base) / 2**20}
        trainer = _trainer(variant, 1e-4, cache, teacher)
        times, step_peak = _steps(trainer, batches, sampler)
    return {"variant": variant, "median_s": statistics.median(times), "best_s": min(times),
            "step_mb": step_peak / 2**20, "total_mb": (sampler.peak - base) / 2**20}


def _write(results: dict, out: Path, command: str, load: str) -> None:
    r = results
    lines = ["# Teacher cache and chunked SFT at the real vocabulary (bench/kd_cache.py)", "",
             f"- Machine: {_machine()}; load average before the run {load} (shared machine: wall times are noisy).",
             f"- Command: `{command}` at commit {_revision()}",
             f"- Work: student Qwen2 {STUDENT[0]} wide x {STUDENT[1]} layers, teacher {TEACHER[0]} wide x "
             f"{TEACHER[1]} layers, random weights, vocabulary {VOCAB:,} (tied); {BATCHES} batches of {BATCH} x "
             f"{SEQ} tokens, {SEQ - PROMPT} response tokens per row; cache top-k {TOP_K} + tail; sweep "
             f"{len(SWEEP)} learning rates x {BATCHES} steps (1 epoch) each.", "",
             "| variant | median step (s) | best step (s) | step peak extra (MB) | total peak (MB) |",
             "|---|---:|---:|---:|---:|"]
    for name in ("sft_default", "sft_chunked", "kd_live", "kd_cached"):
        if name in r:
            x = r[name]
            lines.append(f"| {name} | {x['median_s']:.2f} | {x['best_s']:.2f} | {x['step_mb']:.0f} "
                         f"| {x['total_mb']:.0f} |")
    lines.append("")
    if "build" in r:
        lines.append(f"- Cache build: {r['build']['build_s']:.1f} s for {BATCH * BATCHES * (SEQ - PROMPT):,} "
                     f"response tokens = {r['build']['tokens_per_s']:.0f} tokens/s (teacher forward + top-k).")
    if {"sweep_live", "sweep_cached", "build"} <= r.keys():
        cached = r["sweep_cached"]["sweep_s"] + r["build"]["build_s"]
        ratio = cached / r["sweep_live"]["sweep_s"]
        lines.append(f"- Target: {len(SWEEP)}-point sweep with the cache <= 0.6x the live one: live "
                     f"{r['sweep_live']['sweep_s']:.1f} s, cached {r['sweep_cached']['sweep_s']:.1f} s + build "
                     f"{r['build']['build_s']:.1f} s = {cached:.1f} s -> {ratio:.2f}x, "
                     f"{'met' if ratio <= 0.6 else 'NOT met'}.")
    if {"sft_default", "sft_chunked"} <= r.keys():
        ratio = r["sft_chunked"]["step_mb"] / r["sft_default"]["step_mb"]
        lines.append(f"- Target: SFT step peak memory with the chunked loss <= 0.5x the transformers default: "
                     f"{ratio:.2f}x, {'met' if ratio <= 0.5 else 'NOT met'}.")
    if {"kd_live", "kd_cached"} <= r.keys():
        lines.append(f"- KD cached vs live: step {r['kd_cached']['median_s'] / r['kd_live']['median_s']:.2f}x the "
                     f"time, total peak {r['kd_cached']['total_mb'] / r['kd_live']['total_mb']:.2f}x the memory "
                     "(the live run holds the teacher).")
    if {"kd_live", "kd_cached", "build"} <= r.keys():
        lines.append(_break_even(r))
    for name, err in r.get("failures", {}).items():
        lines.append(f"- {name} failed: {err}")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _break_even(r: dict) -> str:
    """The cache pays for itself after build_s / (live step - cached step) optimizer steps: every step after that
    (any sweep point, epoch or later run on the same teacher and data) is saved time."""
    saved = r["kd_live"]["median_s"] - r["kd_cached"]["median_s"]
    if saved <= 0:
        return "- Break-even: the cached step was not faster than the live one here, so the cache never pays off."
    steps = r["build"]["build_s"] / saved
    return (f"- Break-even: the build ({r['build']['build_s']:.1f} s) costs {steps:.1f} live-teacher steps' worth of "
            f"teacher time ({saved:.2f} s saved per step): from step {int(steps) + 1} on (over all sweep points and "
            "runs that reuse it) the cache is ahead.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=VARIANTS, help="run one variant in this process, print JSON")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--cache", type=Path, help="cache folder (internal)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS_kd_cache.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.variant:
        sys.stdout.write(json.dumps(run_variant(args.variant, args.cache)) + "\n")
        return
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    results: dict = {"failures": {}}
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory(prefix="kd-cache-") as tmp:
        cache = Path(tmp) / "targets"
        for variant in args.variants.split(","):
            proc = subprocess.run([sys.executable, __file__, "--variant", variant, "--cache", str(cache)],
                                  capture_output=True, text=True, env=env, cwd=ROOT)
            if proc.returncode != 0:
                logger.error("%s failed:\n%s", variant, proc.stderr[-3000:])
                results["failures"][variant] = (proc.stderr.strip().splitlines() or ["?"])[-1][:160]
                continue
            results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
            logger.info("%s", json.dumps(results[variant]))
    _write(results, args.out, ("python bench/kd_cache.py " + " ".join(sys.argv[1:])).strip(), load)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
