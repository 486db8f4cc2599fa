"""Does the ``kernels`` package make bitsandbytes' 4-bit CPU path faster here?

bitsandbytes (0.50) on a CPU with AVX512-BF16 asks ``kernels.get_kernel("kernels-community/quantization-
bitsandbytes")`` for a fused 4-bit GEMM when it is imported; ``get_kernel`` downloads that kernel from the
Hugging Face hub at run time. This bench times greedy decode of a 4-bit NF4 model at Qwen2.5-0.5B's dimensions
(random weights, compute bfloat16: the fused path is bfloat16 only) in fresh processes:

1. ``kernels`` hidden (as without the package);
2. ``kernels`` installed, hub offline (``HF_HUB_OFFLINE=1``);
3. ``kernels`` installed, hub not set offline (what a user gets by default; here the hub is unreachable).

Each reports whether bitsandbytes got the hub kernel, the import time of bitsandbytes, and the decode CPU time
per token (process CPU time: comparable on a busy machine), best of ``--repeats``.

Run:  python bench/kernels_cpu.py [--work /tmp/kernels-bench] [--tokens 32] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

log = logging.getLogger("kernels_cpu")

CHILD = r"""
import json, sys, time
if sys.argv[2] == "hidden":
    sys.modules["kernels"] = None  # import kernels → ImportError, as if it were not installed
t0 = time.perf_counter()
import bitsandbytes
import_s = time.perf_counter() - t0
from bitsandbytes.backends.cpu import ops
from engine.quantization.four_bit import _measure
result = _measure(sys.argv[1], "cpu", "Explain knowledge distillation in one sentence.", int(sys.argv[3]))
result.update(import_s=import_s, hub_kernel=getattr(ops, "gemm_4bit_forward_kernel", None) is not None)
print(json.dumps(result))
"""


def run_mode(folder: Path, mode: str, tokens: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if mode == "offline":
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env.pop("HF_HUB_OFFLINE", None)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(folder), mode, str(tokens)], capture_output=True,
                          text=True, env=env, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"{mode}: failed: {proc.stderr.strip().splitlines()[-1:]}")
    warned = [ln for ln in proc.stderr.splitlines() if "kernels-community" in ln]
    return {**json.loads(lines[-1]), "warning": warned[0][:240] if warned else ""}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/kernels-bench"))
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    from bench.quant_bench import build_qwen05
    from engine.quantization.four_bit import quantize_model
    from engine.contract.spec import QuantizeSpec

    original = build_qwen05(args.work / "qwen05-bf16")
    quantized = args.work / "qwen05-nf4"
    if not (quantized / "config.json").exists():
        quantize_model(original, quantized, QuantizeSpec(compute_dtype="bfloat16"), "cpu")
    results = {}
    for mode in ("hidden", "offline", "default"):
        runs = [run_mode(quantized, mode, args.tokens) for _ in range(args.repeats)]
        best = min(runs, key=lambda r: r["cpu_s_per_token"])
        results[mode] = {**best, "cpu_s_per_token_all": [r["cpu_s_per_token"] for r in runs]}
        log.info("%-8s hub kernel %-5s import %.2f s  decode %.4f CPU s/token (%s)  %.2f tokens/s  %s", mode,
                 best["hub_kernel"], best["import_s"], best["cpu_s_per_token"],
                 ", ".join(f"{x:.4f}" for x in results[mode]["cpu_s_per_token_all"]), best["tokens_per_s"],
                 best["warning"])
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
