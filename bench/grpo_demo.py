"""Does GRPO make the distilled demo student better at the task, not only at the format? (issue 5's benchmark)

1. Start: the KD student of a demo run (``compression-engine demo``; the latest one in the run store unless
   ``--start`` names a model folder).
2. Cold start (the paper's CoT-data stage, at demo size): the engine's SFT recipe on the kit's reasoning records
   written as ``<think>reasoning</think><answer>answer or program</answer>`` with exactly the prompts the GRPO stage
   uses — the KD student has never seen the tags, so without this GRPO could only discover them by chance. Like the
   demo's KD stage, only ``--references`` (10 %) of the training prompts come with a written trace and program;
   every prompt has what a verifier needs (the final answer, the tests), which is all GRPO uses.
   Control: the same SFT for ``--control-epochs`` (more epochs on the same traces), to compare GRPO with simply
   training longer.
3. GRPO (the engine's recipe, TRL's GRPOTrainer) from the cold start, once per ``--seeds`` entry, rewarded by
   correctness (answer_correct, code_tests) plus small gated format/structure/length rewards.
   Each GRPO run is a real engine run (``python -m engine run``) in the run store, so the studio's monitor shows
   its curves and samples and its history overlays the seeds.
4. Every model (KD student, cold start, each GRPO run) is scored greedily on the same held-out split, per category.

Writes ``<out>/grpo_bench.json`` and prints a Markdown summary. Usage (≈ 7–8 min per seed on 2 cores)::

    compression-engine demo                      # once: trains the teacher and the KD student (≈ 6 min)
    python bench/grpo_demo.py --out /tmp/grpo_bench --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("grpo_demo")
SPLIT = dict(test_fraction=0.1, validation_fraction=0.05, seed=0, max_length=192)


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


def latest_kd_student() -> Path:
    """The ``student_kd`` model of the newest finished demo run, or a sentence saying how to make one."""
    from engine.contract.runs import RunStore

    for record in sorted(RunStore().list(), key=lambda r: r.id, reverse=True):
        folder = RunStore().paths(record.id).model("student_kd")
        if (folder / "config.json").exists():
            return folder
    raise SystemExit("No demo run with a KD student in the run store: run `compression-engine demo` first, "
                     "or pass --start PATH to a model folder.")


def run(spec, root: Path) -> list[dict]:
    """Run the single stage of ``spec`` in ``root``; returns the events it emitted."""
    from engine.core.context import RunContext
    from engine.recipes import recipe_for
    from engine.contract.protocol import EventWriter
    from engine.contract.runs import RunPaths

    stream = io.StringIO()
    ctx = RunContext(spec=spec, stage=spec.stages[0], paths=RunPaths(root), events=EventWriter("bench", stream),
                     device="cpu")
    recipe_for(spec.stages[0].kind).run_stage(ctx)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def engine_run(spec, spec_path: Path) -> tuple[Path, list[dict]]:
    """Run ``spec`` with the engine's CLI (a run in the store); returns the run folder and its events."""
    import subprocess

    from engine.contract.runs import RunStore
    from engine.contract.spec import dump_spec

    dump_spec(spec, spec_path)
    done = subprocess.run([sys.executable, "-m", "engine", "run", str(spec_path)], stdout=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True, cwd=Path(__file__).resolve().parents[1])
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0:
        errors = [e["data"].get("message") for e in events if e["type"] == "error"]
        raise SystemExit(f"GRPO run failed (exit {done.returncode}): {errors}")
    run_id = next(e["run_id"] for e in events if e["type"] == "hello")
    return RunStore().paths(run_id).root, events


def held_out_scores(model_dir: Path, records: list[dict], max_new_tokens: int) -> dict:
    """The GRPO stage's own held-out evaluation (greedy, per category) of a model that is not a GRPO run's."""
    from engine.models.loading import load_model, load_tokenizer
    from engine.recipes.grpo import evaluate_completions
    from engine.contract.spec import GRPOSpec, ModelSpec

    spec = ModelSpec(source=str(model_dir))
    scores, _ = evaluate_completions(load_model(spec, "cpu"), load_tokenizer(spec), records, GRPOSpec().template,
                                     "demo_reasoning", max_new_tokens=max_new_tokens, batch_size=32, device="cpu")
    return scores


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


def grpo_spec(args: argparse.Namespace, start: Path, seed: int):
    """The GRPO run: correctness rewards first, small gated shaping rewards, from the cold start."""
    from engine.contract.spec import DataSpec, GenerationSpec, GRPOSpec, GRPOStage, RewardSpec, RunSpec, TrainSpec

    rewards = [RewardSpec("answer_correct", 1.0), RewardSpec("code_tests", 1.0), RewardSpec("format_strict", 0.1),
               RewardSpec("reasoning_structure", 0.1), RewardSpec("length", 0.05)]
    return RunSpec(name=f"grpo-bench-seed{seed}", data=DataSpec(preset="demo_reasoning", **SPLIT), device="cpu",
                   cpu_threads=args.threads,
                   stages=[GRPOStage(name="grpo", model=str(start), max_eval_samples=0,
                                     generation=GenerationSpec(batch_size=32),
                                     train=TrainSpec(learning_rate=args.grpo_lr, max_steps=args.grpo_steps,
                                                     batch_size=args.generations * args.prompts_per_step,
                                                     logging_steps=1, save_steps=10_000, warmup_ratio=0.05,
                                                     scheduler="constant", seed=seed),
                                     grpo=GRPOSpec(num_generations=args.generations, beta=args.beta,
                                                   max_completion_length=args.max_completion,
                                                   temperature=args.temperature, rewards=rewards,
                                                   length_range=[12, 48], sample_every=20))])


def cold_start(args: argparse.Namespace, start: Path, records: list[dict], name: str, epochs: float) -> Path:
    """SFT of the start model on the CoT-formatted traces of ``--references`` of the training records (the same
    split as the GRPO run)."""
    from engine.contract.spec import DataSpec, GRPOSpec, RunSpec, SFTStage, TrainSpec

    cot = write_cot_data(records, GRPOSpec().template, args.out / "reasoning_cot.jsonl")
    spec = RunSpec(name=f"grpo-bench-{name}", data=DataSpec(preset="local", path=str(cot), **SPLIT), device="cpu",
                   stages=[SFTStage(name=name, model=str(start), references=args.references,
                                    train=TrainSpec(learning_rate=args.sft_lr, epochs=epochs, batch_size=16,
                                                    logging_steps=50, save_steps=10_000, seed=0))])
    run(spec, args.out / name)
    return args.out / name / "models" / name


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/grpo_bench"))
    parser.add_argument("--start", type=Path, help="model folder to start from (default: latest demo KD student)")
    parser.add_argument("--references", type=float, default=0.1, help="fraction of prompts with a written trace")
    parser.add_argument("--sft-epochs", type=float, default=12)
    parser.add_argument("--control-epochs", type=float, default=24, help="SFT control: epochs on the same traces")
    parser.add_argument("--sft-lr", type=float, default=3e-3)
    parser.add_argument("--grpo-steps", type=int, default=80)
    parser.add_argument("--grpo-lr", type=float, default=1e-4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--prompts-per-step", type=int, default=16)
    parser.add_argument("--beta", type=float, default=0.01)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-completion", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for a 0.5 M model)")
    parser.add_argument("--reuse-cold-start", action="store_true", help="reuse <out>/cold_start if it exists")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    from engine.training_data.loading import load_records
    from engine.training_data.splits import split_records
    from engine.demo.kit import ensure_demo_kit
    from engine.contract.spec import DataSpec

    torch.set_num_threads(args.threads)
    kit = ensure_demo_kit()
    start = args.start or latest_kd_student()
    data = DataSpec(preset="demo_reasoning", **SPLIT)
    records = load_records(data)
    held_out = split_records(records, data).test
    bench: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "start": str(start), "kit": kit.info,
                   "held_out": len(held_out), "timings": {}, "runs": []}

    cold = args.out / "cold_start" / "models" / "cold_start"
    if not (args.reuse_cold_start and (cold / "config.json").exists()):
        began = time.time()
        cold = cold_start(args, start, records, "cold_start", args.sft_epochs)
        bench["timings"]["cold_start_s"] = round(time.time() - began, 1)
    if args.control_epochs:
        began = time.time()
        control = cold_start(args, start, records, "sft_control", args.control_epochs)
        bench["timings"]["sft_control_s"] = round(time.time() - began, 1)
        bench["sft_control"] = held_out_scores(control, held_out, args.max_completion)
    bench["kd_student"] = held_out_scores(start, held_out, args.max_completion)
    bench["cold_start"] = held_out_scores(cold, held_out, args.max_completion)
    for seed in args.seeds:
        began = time.time()
        run_dir, events = engine_run(grpo_spec(args, cold, seed), args.out / f"grpo_seed{seed}.yaml")
        seconds = round(time.time() - began, 1)
        after = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))["grpo"]["grpo"]["after"]
        bench["runs"].append({"seed": seed, "run": str(run_dir), "seconds": seconds, "after": after,
                              "curves": curve_ends(events, 10),
                              "samples": [e["data"] for e in events if e["type"] == "sample"][-2:]})
        log.info("seed %d: correctness %.3f -> %.3f in %.0f s", seed, bench["cold_start"]["correct"],
                 after["correct"], seconds)
        (args.out / "grpo_bench.json").write_text(json.dumps(bench, indent=2, ensure_ascii=False), encoding="utf-8")
    print(summary_markdown(bench))


def summary_markdown(bench: dict) -> str:
    def pct(x):
        return "–" if x is None else f"{100 * x:.1f} %"

    runs = bench["runs"]
    keys = [("correct", "correctness (answers + tests)"), ("answers_correct", "answers correct"),
            ("tests_passed", "tests passed"), ("format", "strict format"), ("rougeL", "ROUGE-L")]
    keys += [(k, k.replace("correct/", "correct: ")) for k in sorted(bench["cold_start"]) if k.startswith("correct/")]
    control = bench.get("sft_control", {})
    head = f"| held-out (n = {bench['held_out']:d}, greedy) | KD student | cold start | SFT control | "
    head += " | ".join(f"GRPO seed {r['seed']}" for r in runs) + " | GRPO mean ± sd |"
    lines = [head, "|" + "---|" * (5 + len(runs))]
    for key, name in keys:
        values = [r["after"].get(key) for r in runs]
        spread = (f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f} %"
                  if len(values) > 1 and None not in values else pct(values[0]) if values else "–")
        lines.append(f"| {name} | {pct(bench['kd_student'].get(key))} | {pct(bench['cold_start'].get(key))} | "
                     f"{pct(control.get(key))} | "
                     + " | ".join(pct(v) for v in values) + f" | {spread} |")
    for r in runs:
        lines += ["", f"seed {r['seed']} ({r['seconds']:.0f} s) — training curve (mean of first / last 10 steps)",
                  "", "| metric | start | end |", "|---|---|---|"]
        lines += [f"| {k} | {c['start']:.3f} | {c['end']:.3f} |" for k, c in r["curves"].items()]
    lines += ["", f"timings: {bench['timings']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
