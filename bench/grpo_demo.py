"""Does GRPO make the demo student better at the task, not only at the format? (issue 5's benchmark)

1. Warm start: the demo student is fine-tuned (the engine's SFT recipe) on the kit's reasoning records written as
   chain-of-thought targets ``<think>reasoning</think><answer>answer or program</answer>``, with exactly the
   prompts the GRPO stage will use (the records' instructions inside the GRPO template) — the paper's
   CoT-data stage, at demo size.
2. GRPO (the engine's recipe, TRL's GRPOTrainer) from that model on the same training split, rewarded by
   correctness (answer_correct, code_tests) plus small gated format/structure rewards; the held-out split (the
   same records in both runs: same count, same seed) is scored greedily before and after.

Writes ``<out>/grpo_bench.json`` (before/after scores, per-reward curves' start and end, completion lengths,
timings) and prints a Markdown summary. Usage::

    python bench/grpo_demo.py --out /tmp/grpo_bench --sft-epochs 6 --grpo-steps 120
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("grpo_demo")


def cot_target(record: dict) -> str:
    final = record["answer"] if record.get("answer") not in (None, "") else record["response"]
    return f"<think>\n{record['reasoning']}\n</think>\n<answer>\n{final}\n</answer>"


def write_cot_data(records: list[dict], template: str, path: Path) -> Path:
    """The reasoning records with GRPO's own prompt as instruction and a <think>/<answer> response."""
    from engine.recipes.grpo import task_prompt

    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            row = {"id": r["id"], "instruction": task_prompt(r, template, "demo_reasoning"), "context": "",
                   "response": cot_target(r), "category": r["category"], "language": r["language"],
                   "answer": r["answer"], "tests": r["tests"]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def run(spec, root: Path) -> tuple[object, list[dict]]:
    """Run the single stage of ``spec`` in ``root``; returns its StageResult and the events it emitted."""
    from engine.context import RunContext
    from engine.pipeline import recipe
    from engine.protocol import EventWriter
    from engine.runs import RunPaths

    stream = io.StringIO()
    ctx = RunContext(spec=spec, stage=spec.stages[0], paths=RunPaths(root), events=EventWriter("bench", stream),
                     device="cpu")
    result = recipe(spec.stages[0].kind).run_stage(ctx)
    return result, [json.loads(line) for line in stream.getvalue().splitlines()]


def curve_ends(events: list[dict], window: int) -> dict:
    """Mean of each GRPO training metric over the first and the last ``window`` logged steps."""
    rows = [e["data"]["values"] for e in events if e["type"] == "metric" and "grpo/reward" in e["data"]["values"]]
    keys = sorted({k for row in rows for k in row if k.startswith(("grpo/", "train/loss"))})
    out = {}
    for key in keys:
        values = [row[key] for row in rows if row.get(key) is not None]
        if values:
            start, end = values[:window], values[-window:]
            out[key] = {"start": sum(start) / len(start), "end": sum(end) / len(end), "points": len(values)}
    return out


def grpo_spec(args: argparse.Namespace, sft_dir: Path, split: dict):
    """The GRPO run: correctness rewards first, small gated shaping rewards, from the SFT warm start."""
    from engine.spec import DataSpec, GenerationSpec, GRPOSpec, RewardSpec, RunSpec, StageSpec, TrainSpec

    rewards = [RewardSpec("answer_correct", 1.0), RewardSpec("code_tests", 1.0), RewardSpec("format_strict", 0.1),
               RewardSpec("reasoning_structure", 0.1), RewardSpec("length", 0.05)]
    grpo = RunSpec(name="grpo-bench", data=DataSpec(preset="demo_reasoning", **split), device="cpu",
                   stages=[StageSpec(kind="grpo", name="grpo", model=str(sft_dir), max_eval_samples=0,
                                     generation=GenerationSpec(batch_size=32),
                                     train=TrainSpec(learning_rate=args.grpo_lr, max_steps=args.grpo_steps,
                                                     batch_size=args.generations * args.prompts_per_step,
                                                     logging_steps=1, save_steps=10_000, warmup_ratio=0.05,
                                                     scheduler="constant", seed=args.seed),
                                     grpo=GRPOSpec(num_generations=args.generations, beta=args.beta,
                                                   max_completion_length=args.max_completion,
                                                   temperature=args.temperature, rewards=rewards,
                                                   length_range=[12, 48], sample_every=20))])
    return grpo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/grpo_bench"))
    parser.add_argument("--sft-epochs", type=float, default=6)
    parser.add_argument("--sft-lr", type=float, default=3e-3)
    parser.add_argument("--grpo-steps", type=int, default=120)
    parser.add_argument("--grpo-lr", type=float, default=5e-4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--beta", type=float, default=0.02)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-completion", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for a 0.3 M model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse-sft", action="store_true", help="reuse <out>/sft/models/sft if it exists")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("COMPRESSION_STUDIO_HOME", str(args.out / "home"))

    import torch

    from engine.data import load_records
    from engine.demo.kit import ensure_demo_kit
    from engine.spec import DataSpec, GRPOSpec, RunSpec, StageSpec, TrainSpec

    torch.set_num_threads(args.threads)
    kit = ensure_demo_kit()
    template = GRPOSpec().template
    split = dict(test_fraction=0.1, validation_fraction=0.05, seed=args.seed, max_length=192)
    records = load_records(DataSpec(preset="demo_reasoning", **split))
    cot = write_cot_data(records, template, args.out / "reasoning_cot.jsonl")
    timings = {}

    sft_dir = args.out / "sft" / "models" / "sft"
    if not (args.reuse_sft and (sft_dir / "config.json").exists()):
        sft = RunSpec(name="grpo-bench-sft", data=DataSpec(preset="local", path=str(cot), **split),
                      device="cpu", stages=[StageSpec(kind="sft", name="sft", model="student", train=TrainSpec(
                          learning_rate=args.sft_lr, epochs=args.sft_epochs, batch_size=16, logging_steps=50,
                          save_steps=10_000, seed=args.seed))])
        start = time.time()
        run(sft, args.out / "sft")
        timings["sft_s"] = round(time.time() - start, 1)
        log.info("SFT warm start done in %.0f s", timings["sft_s"])

    grpo = grpo_spec(args, sft_dir, split)
    start = time.time()
    result, events = run(grpo, args.out / "grpo")
    timings["grpo_s"] = round(time.time() - start, 1)
    report = json.loads((args.out / "grpo" / "work" / "grpo" / "grpo_eval.json").read_text())
    bench = {"args": {k: str(v) for k, v in vars(args).items()}, "kit": kit.info, "timings": timings,
             "before": report["before"], "after": report["after"], "held_out": report["held_out"],
             "curves": curve_ends(events, window=10),
             "samples": [e["data"] for e in events if e["type"] == "sample"][-3:]}
    (args.out / "grpo_bench.json").write_text(json.dumps(bench, indent=2, ensure_ascii=False), encoding="utf-8")
    print(summary_markdown(bench))


def summary_markdown(bench: dict) -> str:
    b, a = bench["before"], bench["after"]

    def pct(x):
        return "–" if x is None else f"{100 * x:.1f} %"

    lines = ["| held-out (n = %d) | before GRPO | after GRPO |" % bench["held_out"], "|---|---|---|"]
    for key, name in (("correct", "correctness (answers + tests)"), ("answers_correct", "answers correct"),
                      ("tests_passed", "tests passed"), ("format", "strict format"), ("rougeL", "ROUGE-L")):
        lines.append(f"| {name} | {pct(b.get(key))} | {pct(a.get(key))} |")
    lines += ["", "| training curve (mean of first / last 10 steps) | start | end |", "|---|---|---|"]
    for key, c in bench["curves"].items():
        lines.append(f"| {key} | {c['start']:.3f} | {c['end']:.3f} |")
    lines += ["", f"timings: {bench['timings']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
