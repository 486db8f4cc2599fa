"""Benchmark of 4-bit post-training quantization (bitsandbytes NF4, double quantization) on this machine.

Two models:

1. A Qwen2-architecture model with Qwen2.5-0.5B's real dimensions (hidden 896, 24 layers, 14 heads, 2 KV heads,
   MLP 4864, vocabulary 151,936, tied embeddings) and random bfloat16 weights: memory of the 4-bit model against
   the 16-bit one (linear-layer weights and whole model), load time, time to first token and decode tokens/s,
   plus engine.models.memory's estimate against the measured resident memory.
2. The demo student — the newest trained student found in the run store (``--student`` to choose one; the
   untrained demo kit student otherwise, said so in the results): the same numbers plus ROUGE-L on the demo's
   held-out split before and after quantization, and the retention.

Every speed/memory number is measured in a fresh subprocess per model
(engine.quantization.report.measure_in_subprocess).

Run:  python bench/quant_bench.py [--student RUN_MODEL_DIR] [--samples 100] [--out bench/RESULTS_quant.md]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# the E402s below: imported after the sys.path line that makes the repository importable
from engine.models import memory  # noqa: E402
from engine.quantization.report import quantization_report, report_markdown  # noqa: E402
from engine.quantization.four_bit import quantize_model  # noqa: E402
from engine.contract.spec import DataSpec, GenerationSpec, QuantizeSpec  # noqa: E402

log = logging.getLogger("quant_bench")
QWEN05_DIMS = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                   intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768,
                   rope_theta=1000000.0, rms_norm_eps=1e-6)


def machine() -> str:
    import bitsandbytes
    import psutil
    import torch
    import transformers

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return (f"{cpu}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, no GPU; "
            f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"transformers {transformers.__version__}, bitsandbytes {bitsandbytes.__version__}")


def build_qwen05(folder: Path) -> Path:
    """Random-weight Qwen2 at Qwen2.5-0.5B's dimensions, saved in bfloat16 with the real Qwen2.5 tokenizer."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from engine.demo.tokenizer import build_qwen_tokenizer

    tokenizer = build_qwen_tokenizer()
    config = Qwen2Config(**QWEN05_DIMS, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def find_trained_student() -> Path | None:
    """The newest student model a run saved (KD first, then SFT), or None."""
    from engine.contract.runs import data_dir

    candidates = [p.parent for p in (data_dir() / "runs").glob("*/models/*/config.json")
                  if "student" in p.parent.name and "4bit" not in p.parent.name]
    candidates.sort(key=lambda p: (p.stat().st_mtime, p.name.endswith("kd")))
    return candidates[-1] if candidates else None


def demo_test_records(model_dir: Path, samples: int) -> tuple[list[dict], str]:
    """The held-out split of the run that trained ``model_dir`` (its spec's data), else the demo preset's."""
    from engine.training_data.loading import load_records
    from engine.training_data.splits import split_records
    from engine.contract.spec import load_spec

    spec_file = model_dir.parent.parent / "spec.yaml"
    data = load_spec(spec_file).data if spec_file.exists() else DataSpec(preset="demo")
    test = split_records(load_records(data), data).test
    return list(test)[:samples], data.preset


def bench_qwen05(work: Path) -> tuple[str, dict]:
    original = build_qwen05(work / "qwen05-bf16")
    quantized = work / "qwen05-nf4"
    timing = work / "qwen05-nf4.quantize_s"
    if not (quantized / "config.json").exists():
        start = time.perf_counter()
        quantize_model(original, quantized, QuantizeSpec(compute_dtype="bfloat16"), "cpu")
        timing.write_text(str(time.perf_counter() - start))
    quantize_s = float(timing.read_text())
    report = quantization_report(original, quantized, [], "demo", GenerationSpec(), "cpu")
    est16 = memory.estimate_model_bytes(original, "bfloat16")
    est4 = memory.estimate_model_bytes(original, "bfloat16", load_in_4bit=True)
    report["estimate"] = {"original": est16, "quantized": est4, "quantize_s": quantize_s}
    text = report_markdown(report, "Qwen2.5-0.5B dimensions (random weights, bfloat16 → NF4, compute bfloat16)")
    o, q = report["original"], report["quantized"]
    text += (f"\nQuantizing took {quantize_s:.1f} s. engine.models.memory's resident estimate against the measured RSS "
             f"(after load + first token; after 32 more tokens): 16-bit {memory.format_bytes(est16)} vs "
             f"{memory.format_bytes(o['rss_bytes'])}; {memory.format_bytes(o['rss_after_generate_bytes'])}, 4-bit "
             f"{memory.format_bytes(est4)} vs {memory.format_bytes(q['rss_bytes'])}; "
             f"{memory.format_bytes(q['rss_after_generate_bytes'])}. Right after from_pretrained (weights still "
             f"memory-mapped, not yet touched): {memory.format_bytes(o['rss_after_load_bytes'])} and "
             f"{memory.format_bytes(q['rss_after_load_bytes'])}.\n")
    return text, report


def bench_student(work: Path, student: Path | None, samples: int, max_new_tokens: int) -> tuple[str, dict]:
    from engine.models.loading import resolve_source

    trained = student is not None
    folder = Path(student) if trained else Path(resolve_source("demo:student").location)
    quantized = work / "student-nf4"
    quantize_model(folder, quantized, QuantizeSpec(), "cpu")
    records, preset = demo_test_records(folder, samples)
    gen = GenerationSpec(max_new_tokens=max_new_tokens, batch_size=32)
    report = quantization_report(folder, quantized, records, preset, gen, "cpu")
    what = f"trained student `{folder}`" if trained else "the demo kit's UNTRAINED student (no trained one found)"
    text = report_markdown(report, f"Demo student (float32 → NF4, compute float32): {what}")
    full = all_layers_nf4_quality(folder, records, preset, gen)
    report["all_layers_nf4"] = full
    base = report["original"].get("scores", {})
    cells = ", ".join(f"{k} {v:.4f} (retention {v / base[k]:.3f})" if base.get(k) else f"{k} {v:.4f}"
                      for k, v in full["scores"].items())
    text += (f"\nWith all {full['layers_4bit']} block linears in NF4 (the kernel-incompatible ones run through "
             f"bitsandbytes' generic de-quantize path; measurement only, not a saved model): {cells}.\n")
    return text, report


def from_run(run_dir: Path) -> tuple[str, dict] | None:
    """The quantize stage's report of a finished run (eval.json), rendered like the benchmark's own."""
    eval_json = run_dir / "eval.json"
    reports = json.loads(eval_json.read_text()).get("quantization", {}) if eval_json.exists() else {}
    if not reports:
        return None
    stage, report = next(iter(reports.items()))
    title = f"Trained demo student from run `{run_dir.name}` (stage `{stage}`: {report.get('source')} → NF4)"
    return report_markdown(report, title), report


def all_layers_nf4_quality(folder: Path, records: list[dict], preset: str, gen: GenerationSpec) -> dict:
    """ROUGE-L with *every* block linear in NF4, including widths the CPU's AVX-512 kernel cannot run: those
    layers are switched to bitsandbytes' generic CPU path (de-quantize, then matmul; what training uses). Not a
    portable model — a measurement of what full 4-bit quantization costs in quality."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from bitsandbytes.nn import Linear4bit

    from engine.evaluation.generation import evaluate_model
    from engine.quantization.report import headline_scores

    qconfig = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=qconfig, device_map={"": "cpu"}).eval()
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    tokenizer = AutoTokenizer.from_pretrained(folder)
    scores, _ = evaluate_model(model, tokenizer, records, preset, gen, "cpu")
    return {"layers_4bit": len(layers), "scores": headline_scores(scores)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, default=None, help="a trained student folder (default: newest run)")
    parser.add_argument("--samples", type=int, default=100, help="held-out records for ROUGE-L")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--work", type=Path, default=Path("/tmp/quant_bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS_quant.md")
    parser.add_argument("--threads", type=int, default=1,
                        help="OpenMP/torch threads of the measuring subprocesses (0 = library default); on a "
                             "machine busy with other work, 2 OpenMP threads on 2 cores spend most time spinning")
    parser.add_argument("--skip-qwen", action="store_true")
    parser.add_argument("--run", type=Path, default=None,
                        help="a run folder whose quantize stage already wrote its report into eval.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the measuring subprocesses
    student = args.student or find_trained_student()
    sections, raw = [], {}
    if not args.skip_qwen:
        text, raw["qwen05"] = bench_qwen05(args.work)
        sections.append(text)
    found = from_run(args.run) if args.run else None
    text, raw["student"] = found or bench_student(args.work, student, args.samples, args.max_new_tokens)
    sections.append(text)
    command = "python bench/quant_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = ["# 4-bit quantization benchmark", "", f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
              f"Machine: {machine()}; load average while measuring {os.getloadavg()[0]:.1f} (other work shared "
              f"the machine); measuring subprocesses ran with OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}",
              f"Command: `{command.strip()}`", ""]
    marker = "<!-- notes: kept when the benchmark is rerun -->"
    old = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
    notes = old[old.index(marker):] if marker in old else marker + "\n"
    args.out.write_text("\n".join(header) + "\n" + "\n".join(sections) + "\n" + notes, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str), encoding="utf-8")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
