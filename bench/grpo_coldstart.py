"""Does the wizard's cold start make its GRPO run learn on the demo? (issue 20, item 7)

Builds two runs exactly as the wizard does (``studio.model.wizard_model``: method "Chain-of-thought GRPO", the
demo's student, the ``demo_reasoning`` data, the Method page's rewards) — one with the Method page's "add a cold
start" ticked (an SFT stage in the think/answer template, then GRPO from it), one without — runs each with
``python -m engine run`` and prints the GRPO stage's held-out scores before/after and the mean of its training
rewards over the first and last ``--window`` logged steps. Usage (``--out`` keeps the specs and the summary)::

    python bench/grpo_coldstart.py --out /tmp/coldstart --grpo-steps 80 --seed 0
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("grpo_coldstart")


def wizard_spec(args: argparse.Namespace, cold: bool):
    """The spec the wizard builds for GRPO on the demo, with or without the cold start."""
    from engine.contract.spec import DataSpec, GRPOSpec, RewardSpec, TrainSpec
    from studio.model.wizard_model import WIZARD_GRPO_BETA, WizardChoices, build_spec

    rewards = [RewardSpec(r.name, r.weight) for r in GRPOSpec().rewards] + [RewardSpec("code_tests", 1.0)]
    choices = WizardChoices(name=f"coldstart-{'on' if cold else 'off'}-s{args.seed}", method="grpo",
                            data=DataSpec(preset="demo_reasoning"), with_eval=False, device="cpu",
                            run_extra={"cpu_threads": args.threads},
                            grpo=GRPOSpec(beta=WIZARD_GRPO_BETA, rewards=rewards, temperature=args.temperature,
                                          max_completion_length=args.max_completion),
                            train=TrainSpec(max_steps=args.grpo_steps, seed=args.seed, logging_steps=1,
                                            learning_rate=args.grpo_lr, batch_size=args.grpo_batch,
                                            scheduler="constant"))
    choices.same_train, choices.stage_train = False, {"grpo": choices.train}  # --grpo-lr as GRPO's own setting
    if cold:  # the Method page's "add a cold start" box, with its steps, learning rate and own train settings
        choices.cold_start, choices.cold_start_steps, choices.cold_start_lr = True, args.cold_steps, args.cold_lr
        choices.student_references = args.references  # the Training page's share of prompts with references
        choices.cold_start_train = TrainSpec(learning_rate=args.cold_lr, batch_size=16, logging_steps=20,
                                             scheduler="constant", seed=args.seed)
    spec = build_spec(choices)
    spec.stages[-1].max_eval_samples = args.held_out
    return spec


def engine_run(spec, path: Path) -> tuple[Path, list[dict], float]:
    from engine.contract.runs import RunStore
    from engine.contract.spec import dump_spec

    dump_spec(spec, path)
    began = time.time()
    done = subprocess.run([sys.executable, "-m", "engine", "run", str(path)], stdout=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True, cwd=ROOT)
    seconds = time.time() - began
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0:
        raise SystemExit(f"run failed (exit {done.returncode}): "
                         f"{[e['data'].get('message') for e in events if e['type'] == 'error']}")
    run_id = next(e["run_id"] for e in events if e["type"] == "hello")
    return RunStore().paths(run_id).root, events, seconds


def curve_ends(events: list[dict], window: int) -> dict:
    rows = [e["data"]["values"] for e in events if e["type"] == "metric" and "grpo/reward" in e["data"]["values"]]
    out = {}
    for key in sorted({k for row in rows for k in row if k.startswith("grpo/reward")}):
        values = [row[key] for row in rows if row.get(key) is not None]
        if values:
            out[key] = [sum(values[:window]) / len(values[:window]), sum(values[-window:]) / len(values[-window:])]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/coldstart"))
    parser.add_argument("--grpo-steps", type=int, default=80)
    parser.add_argument("--cold-steps", type=int, default=300)
    parser.add_argument("--held-out", type=int, default=100)
    parser.add_argument("--cold-lr", type=float, default=3e-3)
    parser.add_argument("--references", type=float, default=1.0,
                        help="share of training prompts whose trace the cold start sees (bench/RESULTS_grpo.md: 0.1)")
    parser.add_argument("--grpo-lr", type=float, default=1e-4)
    parser.add_argument("--grpo-batch", type=int, default=32, help="completions per step (prompts × 4)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for a 0.5 M model)")
    parser.add_argument("--max-completion", type=int, default=64, help="grpo.max_completion_length")
    parser.add_argument("--only", choices=["on", "off"], help="run one variant only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for cold in (True, False):
        name = "on" if cold else "off"
        if args.only and args.only != name:
            continue
        run_dir, events, seconds = engine_run(wizard_spec(args, cold), args.out / f"cold_{name}_s{args.seed}.yaml")
        grpo = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))["grpo"]["grpo"]
        summary[name] = {"run": str(run_dir), "seconds": round(seconds, 1), "before": grpo["before"],
                         "after": grpo["after"], "curves": curve_ends(events, args.window)}
        log.info("cold start %s: %s", name, json.dumps(summary[name]))
        (args.out / f"summary_s{args.seed}_{args.only or 'both'}.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
