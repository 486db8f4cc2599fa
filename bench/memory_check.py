"""Benchmark: the pre-load memory estimate (engine/models/memory_plan.py) against measured peaks on CPU.

Each case runs in a fresh subprocess exactly as its recipe does (the engine's trainers, AdamW, real vocabulary
151,936, random weights built from a config): the peak RSS (1 ms sampling) above the RSS right after the imports
is compared with the estimate the engine makes for the same spec before loading anything. Target: within ±25 %.
Then the estimate's verdict for the paper's spec (Qwen2.5-3B teacher, Qwen2.5-0.5B student; examples/) on 24, 48
and 80 GB GPUs.

Run: python bench/memory_check.py  (writes bench/RESULTS_memory.md)
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from kd_step import PeakRSS, _machine, _revision  # noqa: E402 - after the sys.path lines above

VOCAB, BATCH, SEQ, PROMPT = 151_936, 4, 256, 128
STUDENT = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4)
TEACHER = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=4)
CASES = {
    "sft": {"kind": "sft"},
    "sft_checkpointing": {"kind": "sft", "train": {"gradient_checkpointing": True}},
    "sft_lora": {"kind": "sft", "train": {"lora": {"enabled": True, "r": 16}}},
    "kd_live": {"kind": "distill", "distill": {"chunk_size": 256}},
    "kd_cached": {"kind": "distill", "distill": {"chunk_size": 256, "teacher_cache": {"enabled": True, "top_k": 64}}},
}
logger = logging.getLogger("bench.memory_check")


def _config(dims: dict):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=VOCAB, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ,
                       tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, **dims)


def _spec(case: str, folders: dict[str, Path]):
    from engine.contract.spec import RunSpec, build

    stage = {"name": "stage", "model": "student", "teacher": "teacher",
             "train": {"batch_size": BATCH, "max_steps": 3}, **json.loads(json.dumps(CASES[case]))}
    stage["train"] = {"batch_size": BATCH, **stage.get("train", {})}
    return build(RunSpec, {"name": case, "teacher": {"source": str(folders["teacher"])},
                           "student": {"source": str(folders["student"])},
                           "data": {"preset": "demo", "max_length": SEQ}, "stages": [stage]})


def run_case(case: str, folders: dict[str, Path]) -> dict:
    import torch
    from transformers import Qwen2ForCausalLM, TrainingArguments

    from engine.training_data.collate import pad_collator

    from engine.training.kd_trainer import ChunkedSFTTrainer, KDTrainer
    from engine.models.memory_plan import stage_peak
    from engine.models.loading import apply_lora

    import peft  # noqa: F401 - imported before the baseline: its import is not the stage's memory

    torch.set_num_threads(2)
    spec = _spec(case, folders)
    stage = spec.stages[0]
    estimate, parts = stage_peak(spec, stage, "cpu")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, VOCAB, (BATCH * 2, SEQ), generator=g).tolist()
    rows = [{"input_ids": r, "attention_mask": [1] * SEQ, "labels": [-100] * PROMPT + r[PROMPT:], "row": i}
            for i, r in enumerate(ids)]
    args = TrainingArguments(output_dir="/tmp/memory_check_out", report_to="none", use_cpu=True,
                             save_strategy="no", per_device_train_batch_size=BATCH, disable_tqdm=True,
                             remove_unused_columns=False,
                             gradient_checkpointing=stage.train.gradient_checkpointing)
    with PeakRSS() as sampler:
        base = sampler.now()
        torch.manual_seed(0)
        targets, teacher = None, None
        if stage.kind == "distill":
            teacher = Qwen2ForCausalLM(_config(TEACHER)).eval().requires_grad_(False)
            if stage.distill.teacher_cache.enabled:
                from engine.training.teacher_targets import build_targets
                from bench.kd_cache import _targets

                out = Path(tempfile.mkdtemp()) / "targets"
                build_targets(teacher, rows, out, top_k=64, temperature=1.0, batch_size=BATCH, device="cpu",
                              pad_id=0)
                targets, teacher = _targets(out), None
                gc.collect()
        student = Qwen2ForCausalLM(_config(STUDENT))
        if stage.train.lora.enabled:
            student = apply_lora(student, stage.train.lora)
        if stage.kind == "sft":
            trainer = ChunkedSFTTrainer(model=student, args=args)
        else:
            trainer = KDTrainer(model=student, teacher_model=teacher, teacher_targets=targets, args=args,
                                kd_settings=stage.distill)
        trainer.current_gradient_accumulation_steps = 1
        optimizer = trainer.create_optimizer()
        collate = pad_collator(0)
        if stage.train.gradient_checkpointing:
            student.gradient_checkpointing_enable()
        for i in range(3):
            batch = collate(rows[(i % 2) * BATCH:(i % 2 + 1) * BATCH])
            trainer.training_step(trainer.model, batch, None)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    measured = sampler.peak - base
    return {"case": case, "measured_mb": measured / 2**20, "estimate_mb": estimate / 2**20,
            "ratio": estimate / measured, "parts_mb": {k: round(v / 2**20) for k, v in parts.items()}}


def paper_verdicts() -> list[str]:
    from engine.models.memory import format_bytes
    from engine.models.memory_plan import plan
    from engine.contract.spec import load_spec

    lines = []
    for name in ("dolly_en.yaml",):
        spec = load_spec(ROOT / "examples" / name)
        for gb in (24, 48, 80):
            report = plan(spec, "cuda", gb * 10**9)
            cells = []
            for s in report["stages"]:
                verdict = "fits" if s["fits"] else (f"does not fit -> {s['fix']['change']} "
                                                    f"({format_bytes(s['fix']['peak_bytes'])})" if s.get("fix")
                                                    else "does not fit, no change fits")
                cells.append(f"{s['stage']} {format_bytes(s['peak_bytes'])} {verdict}")
            lines.append(f"| {name} | {gb} GB | " + "<br>".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=list(CASES))
    parser.add_argument("--folders", help="internal: JSON of the config folders")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS_memory.md")
    parser.add_argument("--verdicts-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.case:
        folders = {k: Path(v) for k, v in json.loads(args.folders).items()}
        sys.stdout.write(json.dumps(run_case(args.case, folders)) + "\n")
        return
    rows = []
    if not args.verdicts_only:
        with tempfile.TemporaryDirectory(prefix="memory-check-") as tmp:
            folders = {"student": Path(tmp) / "student", "teacher": Path(tmp) / "teacher"}
            _config(STUDENT).save_pretrained(folders["student"])
            _config(TEACHER).save_pretrained(folders["teacher"])
            env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(ROOT))
            for case in CASES:
                proc = subprocess.run([sys.executable, __file__, "--case", case, "--folders",
                                       json.dumps({k: str(v) for k, v in folders.items()})],
                                      capture_output=True, text=True, env=env, cwd=ROOT)
                if proc.returncode != 0:
                    logger.error("%s failed:\n%s", case, proc.stderr[-3000:])
                    continue
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                logger.info("%s", json.dumps(rows[-1]))
    lines = ["# Memory estimate vs measured peaks (bench/memory_check.py)", "",
             f"- Machine: {_machine()}", f"- Command: `python bench/memory_check.py` at commit {_revision()}",
             f"- Work: student Qwen2 {STUDENT}, teacher {TEACHER}, vocabulary {VOCAB:,} (tied), fp32 on CPU, "
             f"AdamW, batch {BATCH} x {SEQ} tokens ({SEQ - PROMPT} response tokens per row), 3 steps; measured = "
             "peak RSS above the RSS after the imports (model build, cache build, steps).", "",
             "| case | measured (MB) | estimate (MB) | estimate / measured | estimate's parts (MB) |",
             "|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['measured_mb']:.0f} | {r['estimate_mb']:.0f} | {r['ratio']:.2f} "
                     f"| {', '.join(f'{k} {v}' for k, v in r['parts_mb'].items())} |")
    if rows:
        ok = all(0.75 <= r["ratio"] <= 1.25 for r in rows)
        lines += ["", f"- Target: every estimate within ±25 % of the measured peak: {'met' if ok else 'NOT met'}."]
    lines += ["", "## Verdicts for the paper's spec (estimate only; CUDA, before any weight is read)", "",
              "| spec | GPU | stages |", "|---|---|---|", *paper_verdicts()]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
