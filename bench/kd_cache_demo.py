"""Benchmark: on the demo, does KD from the teacher's cached top-k targets (+ tail bucket) teach the student as
well as the live teacher? Per seed, one run of the engine CLI: teacher SFT, then two KD stages from it (live
teacher; cached top-k targets) with the demo's KD settings and schedule, then one evaluation of both students
(ROUGE-L on the demo's held-out records). Target: the mean gap within 0.5 ROUGE-L points.

Usage: python bench/kd_cache_demo.py --seeds 0,1,2 [--top-k 64] [--quick]
Results: bench/RESULTS_kd_cache_demo.json (appended per seed as each finishes) and the log.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
logger = logging.getLogger("bench.kd_cache_demo")


def demo_cache_spec(seed: int, top_k: int, quick: bool) -> dict:
    """The demo spec with its KD stage twice (live, cached) and without the SFT student."""
    from engine.demo.pipeline import demo_spec
    from engine.contract.spec import to_dict

    spec = to_dict(demo_spec(quick=quick, seed=seed))
    teacher_sft, _student_sft, kd, evaluate = spec["stages"]
    live = {**kd, "name": "kd_live"}
    cached = json.loads(json.dumps(kd))
    cached["name"] = "kd_cached"
    cached["distill"]["teacher_cache"] = {"enabled": True, "top_k": top_k, "batch_size": 32, "path": ""}
    evaluate["models"] = {"teacher": "teacher_sft", "kd_live": "kd_live", "kd_cached": "kd_cached"}
    spec["stages"] = [teacher_sft, live, cached, evaluate]
    spec["name"] = f"kd-cache-demo-{seed}"
    return spec


def run_seed(seed: int, top_k: int, quick: bool, home: Path) -> dict:
    import yaml

    spec_file = home / f"spec-{seed}.yaml"
    spec_file.write_text(yaml.safe_dump(demo_cache_spec(seed, top_k, quick), sort_keys=False), encoding="utf-8")
    env = dict(os.environ, COMPRESSION_STUDIO_HOME=str(home), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "engine", "run", str(spec_file)], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        raise RuntimeError(f"seed {seed} failed: {proc.stderr[-2000:]}")
    run_id = events[0]["run_id"]
    report = json.loads((home / "runs" / run_id / "eval.json").read_text(encoding="utf-8"))
    stage_times = {}
    for e in events:
        if e["type"] == "status" and e["data"].get("stage"):
            stage_times.setdefault(e["data"]["stage"], e["time"])
    scores = {name: m["rougeL"] for name, m in report["models"].items()}
    return {"seed": seed, "top_k": top_k, "rougeL": scores, "wall_s": round(time.time() - started, 1),
            "gap_points": round(100 * (scores["kd_cached"] - scores["kd_live"]), 2), "stage_start": stage_times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="a smoke test of the script (a few steps)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS_kd_cache_demo.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory(prefix="kd-cache-demo-") as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            results.append(run_seed(seed, args.top_k, args.quick, Path(tmp)))
            logger.info("%s", json.dumps(results[-1]))
            gaps = [r["gap_points"] for r in results]
            summary = {"command": "python bench/kd_cache_demo.py " + " ".join(sys.argv[1:]), "runs": results,
                       "mean_gap_points": round(sum(gaps) / len(gaps), 2)}
            args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
