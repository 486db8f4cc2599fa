"""KD student vs SFT-only student over several seeds, on one trained teacher (not a test: run by hand).

The teacher SFT is the slow part of the demo and does not depend on the student's seed, so this benchmark trains
it once (or reuses a finished demo run) and then, for every seed and every ``references`` fraction, resumes a copy
of that run with only the student stages and the evaluation left to do — through the real CLI, exactly as
``compression-engine run --resume`` would. The seed changes the students' data order (``train.seed``); the
split and the held-out set stay fixed so that every score is on the same 200 records.

    python bench/kd_vs_sft.py --run RUN_DIR --seeds 0 1 2 --references 1.0 0.1

prints a markdown table of ROUGE-L per seed with the mean and spread of (KD − SFT).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from engine.demo.pipeline import demo_spec
from engine.contract.spec import RunSpec, build, dump_spec, to_dict

STUDENT_STAGES = ("student_sft", "student_kd")


def prepare(run: Path, seed: int, references: float) -> Path:
    """A copy of ``run`` holding only its trained teacher, with a spec for this seed and fraction."""
    copy = run.with_name(f"{run.name}-s{seed}-r{references:g}")
    shutil.rmtree(copy, ignore_errors=True)
    for part in ("models/teacher_sft", "work/teacher_sft"):
        shutil.copytree(run / part, copy / part)
    info = json.loads((run / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**info, "id": copy.name, "scores": {}}))
    spec = to_dict(demo_spec())
    for stage in spec["stages"]:
        if stage["name"] in STUDENT_STAGES:
            stage["references"] = references
            stage["train"]["seed"] = seed
    dump_spec(build(RunSpec, spec), copy / "spec.yaml")
    return copy


def run_copy(copy: Path, home: Path) -> dict:
    env = {**os.environ, "COMPRESSION_STUDIO_HOME": str(home), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "engine", "run", "--resume", copy.name], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    models = json.loads((copy / "eval.json").read_text())["models"]
    return {name: scores["rougeL"] for name, scores in models.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished demo run folder (its teacher is reused)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--references", type=float, nargs="+", default=[1.0])
    parser.add_argument("--parallel", type=int, default=2, help="copies run at once (one thread each)")
    args = parser.parse_args()
    home = args.run.parent.parent
    jobs = [(r, s, prepare(args.run, s, r)) for r in args.references for s in args.seeds]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(args.parallel) as pool:
        scores = list(pool.map(lambda job: run_copy(job[2], home), jobs))
    print("| references | seed | teacher | SFT student | KD student | KD − SFT |")  # the report
    print("|---|---|---|---|---|---|")
    for fraction in args.references:
        gaps = []
        for (r, seed, _), s in zip(jobs, scores):
            if r != fraction:
                continue
            gaps.append(s["kd_student"] - s["sft_student"])
            print(f"| {r:g} | {seed} | {s['teacher']:.4f} | {s['sft_student']:.4f} | {s['kd_student']:.4f} "
                  f"| {gaps[-1]:+.4f} |")
        spread = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
        print(f"| {fraction:g} | mean ± sd | | | | {statistics.mean(gaps):+.4f} ± {spread:.4f} |")


if __name__ == "__main__":
    main()
