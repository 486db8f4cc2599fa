"""Cross-tokenizer KD vs sequence-level KD vs SFT, at equal student compute, over seeds (not a test: run by hand).

The teacher is the demo kit's ``demo:teacher_bpe`` (the teacher's size, a BPE tokenizer trained on the demo
text, Zephyr chat markers), so token-level KD is impossible; the student is the Qwen-tokenized demo student. Each
student stage gets the same steps, batch, learning rate and references (10 % of the prompts, the teacher answers
the rest), so the students differ only in what they learn from (``compression-engine demo --cross-tokenizer``).

The first seed runs the whole spec (its teacher SFT is reused); every further seed resumes a copy of that run
holding only the trained teacher (and the teacher's cached answers when that run has them: they do not depend on
the student's seed), through the real CLI, two copies at a time; an interrupted copy (or first run) is resumed
where it stopped. The seed changes the students' data order and initial batches (``train.seed``).

    python bench/cross_tokenizer_demo.py --out /tmp/xtok --seeds 0 1 2

prints a markdown table of ROUGE-L per seed with the mean and spread of each KD student minus the SFT one.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from engine.contract.spec import RunSpec, build, dump_spec, load_spec, to_dict
from engine.demo.pipeline import cross_tokenizer_demo_spec

STUDENTS = ("sft_student", "seq_kd_student", "xtok_kd_student")
KD_STAGES = ("student_seq_kd", "student_xtok_kd")


def _env(home: Path) -> dict:
    return {**os.environ, "COMPRESSION_STUDIO_HOME": str(home), "OMP_NUM_THREADS": "1",
            "TRL_EXPERIMENTAL_SILENCE": "1"}


def first_run(home: Path, spec_file: Path) -> Path:
    dump_spec(cross_tokenizer_demo_spec(seed=0), spec_file)
    subprocess.run([sys.executable, "-m", "engine", "run", str(spec_file)], env=_env(home), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return max((home / "runs").iterdir(), key=lambda p: p.stat().st_mtime)


def copy_of(run: Path, seed: int) -> Path:
    """The seed's copy of ``run``: a valid run id (the last 4 hex digits are the run's tag), a000 + seed."""
    return run.with_name(f"{run.name[:-4]}{0xA000 + seed:04x}")


def prepare(run: Path, seed: int) -> Path:
    """A copy of ``run`` with its trained teacher and the teacher's answers, for seed ``seed``."""
    copy = copy_of(run, seed)
    shutil.rmtree(copy, ignore_errors=True)
    for part in ("models/teacher_sft", "work/teacher_sft"):
        shutil.copytree(run / part, copy / part)
    for stage in KD_STAGES:  # when the first run got that far: they do not depend on the student's seed
        answers = run / "work" / stage / "teacher_answers.jsonl"
        if answers.exists():
            (copy / "work" / stage).mkdir(parents=True, exist_ok=True)
            shutil.copy(answers, copy / "work" / stage)
    info = json.loads((run / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**info, "id": copy.name, "scores": {}, "status": "cancelled"}))
    spec = to_dict(cross_tokenizer_demo_spec(seed=0))
    for stage in spec["stages"]:
        if stage["name"] != "teacher_sft" and "train" in stage:
            stage["train"]["seed"] = seed
    dump_spec(build(RunSpec, spec), copy / "spec.yaml")
    return copy


def alpha_variant(run: Path, seed: int, alpha: float) -> Path:
    """A copy of a finished seed run whose cross-tokenizer stage (and evaluation) is redone with CE weight
    ``alpha``; the teacher, the other students and the teacher's answers are kept (tag b000 + seed)."""
    copy = run.with_name(f"{run.name[:-4]}{0xB000 + seed:04x}")
    shutil.rmtree(copy, ignore_errors=True)
    redo = {"models/student_xtok_kd", "work/eval", "eval.json", "eval.md", "lock", "tensorboard", "checkpoints"}
    shutil.copytree(run, copy, ignore=lambda folder, names: [
        n for n in names if str(Path(folder, n).relative_to(run)) in redo])
    (copy / "work" / "student_xtok_kd" / "done.json").unlink()
    info = json.loads((run / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**info, "id": copy.name, "scores": {}, "status": "cancelled"}))
    spec = to_dict(load_spec(run / "spec.yaml"))
    next(st for st in spec["stages"] if st["name"] == "student_xtok_kd")["distill"]["alpha"] = alpha
    dump_spec(build(RunSpec, spec), copy / "spec.yaml")
    return copy


def scores_of(run: Path) -> dict:
    models = json.loads((run / "eval.json").read_text())["models"]
    return {name: s["rougeL"] for name, s in models.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="a fresh folder (the runs' home)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--run", type=Path, help="a cross-tokenizer demo run to reuse as seed 0 (its teacher SFT "
                        "finished; the run itself may still be going)")
    parser.add_argument("--parallel", type=int, default=2, help="seed copies run at once (one thread each)")
    parser.add_argument("--xtok-alpha", type=float, help="after the seeds: redo only the cross-tokenizer student "
                        "of every seed with this CE weight α (a variant; the demo's is 0.5)")
    args = parser.parse_args()
    started = time.monotonic()
    run = args.run or first_run(args.out, args.out / "spec.yaml")
    home = run.parent.parent

    def resume(seed: int) -> dict:
        copy = copy_of(run, seed)
        if not (copy / "eval.json").exists():
            if not (copy / "spec.yaml").exists():  # else an earlier, interrupted copy: resumed where it stopped
                copy = prepare(run, seed)
            subprocess.run([sys.executable, "-m", "engine", "run", "--resume", copy.name], env=_env(home),
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return scores_of(copy)

    from concurrent.futures import ThreadPoolExecutor

    others = [s for s in args.seeds if s != 0]
    with ThreadPoolExecutor(max(args.parallel, 1)) as pool:  # one thread per run: copies share the cores
        scores = list(pool.map(resume, others))
    if not (run / "eval.json").exists():  # --run given while it was still going, or it stopped: wait, resume
        while json.loads((run / "run.json").read_text()).get("status") == "running":
            time.sleep(10)
        if not (run / "eval.json").exists():
            subprocess.run([sys.executable, "-m", "engine", "run", "--resume", run.name], env=_env(home),
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {0: scores_of(run), **dict(zip(others, scores))}
    if args.xtok_alpha is not None:
        seed_runs = [(run, 0)] + [(copy_of(run, s), s) for s in others]

        def redo(job: tuple[Path, int]) -> dict:
            copy = alpha_variant(*job, args.xtok_alpha)
            subprocess.run([sys.executable, "-m", "engine", "run", "--resume", copy.name], env=_env(home),
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return scores_of(copy)

        with ThreadPoolExecutor(max(args.parallel, 1)) as pool:
            results = dict(zip([0] + others, pool.map(redo, seed_runs)))
        print(f"cross-tokenizer student with α = {args.xtok_alpha}")  # the report
    print(f"{time.monotonic() - started:.0f} s; run {run.name}")  # the report
    print("| seed | teacher | SFT | sequence KD | cross-tokenizer KD | seq − SFT | xtok − SFT |")
    print("|---|---|---|---|---|---|---|")
    gaps: dict[str, list[float]] = {"seq": [], "xtok": []}
    for seed, s in sorted(results.items()):
        gaps["seq"].append(s["seq_kd_student"] - s["sft_student"])
        gaps["xtok"].append(s["xtok_kd_student"] - s["sft_student"])
        print(f"| {seed} | {s['teacher']:.4f} | {s['sft_student']:.4f} | {s['seq_kd_student']:.4f} | "
              f"{s['xtok_kd_student']:.4f} | {gaps['seq'][-1]:+.4f} | {gaps['xtok'][-1]:+.4f} |")
    sd = {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in gaps.items()}
    means = {name: statistics.mean(r[name] for r in results.values()) for name in STUDENTS}
    print(f"| mean ± sd | | {means['sft_student']:.4f} | {means['seq_kd_student']:.4f} | "
          f"{means['xtok_kd_student']:.4f} | {statistics.mean(gaps['seq']):+.4f} ± {sd['seq']:.4f} | "
          f"{statistics.mean(gaps['xtok']):+.4f} ± {sd['xtok']:.4f} |")
    (args.out / "results.json").write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
