"""GGUF cache benchmark: how long a GGUF source takes to load the first time (unpacked into the cache) and every
time after (a plain folder), against transformers' own GGUF load (what every load cost before the cache).

The GGUF is synthetic — random weights at Qwen2.5-0.5B's shapes (or fewer layers with --layers), Q8_0 like a
common download, the 151,936-row vocabulary padded with [PAD…] placeholders as llama.cpp's converter writes
it — because the suite has no hub access. Run by hand:

    PYTHONPATH=. OMP_NUM_THREADS=2 python bench/gguf_cache.py --layers 24 --out /tmp/gguf-bench

Prints one JSON line and a markdown row for bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "engine"))


def build(out: Path, layers: int) -> Path:
    """A Qwen2.5-0.5B-shaped model (random init, float32) saved with the tests' tiny tokenizer, then its GGUF."""
    import torch
    from quant_helpers import tiny_tokenizer, write_gguf
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = out / "hf"
    if not (folder / "config.json").exists():
        tokenizer = tiny_tokenizer()
        config = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=layers,
                             num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                             tie_word_embeddings=True, max_position_embeddings=32768,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(0)
        Qwen2ForCausalLM(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    gguf = out / f"qwen2.5-0.5b-shape-{layers}l-q8_0.gguf"
    if not gguf.exists():
        write_gguf(folder, gguf, quantized=True)  # Q8_0 everywhere but the MLP (Q4_0), norms F32
    return gguf


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("/tmp/gguf-bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["COMPRESSION_STUDIO_HOME"] = str(args.out / "home")
    import torch
    from transformers import AutoModelForCausalLM

    from engine.contract.spec import ModelSpec
    from engine.models.gguf_source import cache_root
    from engine.models.loading import load_model

    t = time.perf_counter()
    gguf = build(args.out, args.layers)
    build_s = time.perf_counter() - t
    import shutil

    shutil.rmtree(cache_root(), ignore_errors=True)
    t = time.perf_counter()
    direct = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    direct_s = time.perf_counter() - t
    params = sum(p.numel() for p in direct.parameters())
    del direct
    t = time.perf_counter()
    load_model(ModelSpec(source=str(gguf)), "cpu")  # first load: unpack into the cache, then load the folder
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    load_model(ModelSpec(source=str(gguf)), "cpu")
    cached_s = time.perf_counter() - t
    result = {"layers": args.layers, "parameters": params, "gguf_bytes": gguf.stat().st_size,
              "build_s": round(build_s, 1), "transformers_gguf_load_s": round(direct_s, 1),
              "first_load_with_unpack_s": round(first_s, 1), "cached_load_s": round(cached_s, 1),
              "threads": torch.get_num_threads()}
    print(json.dumps(result))
    print(f"| {params / 1e6:.0f} M params, {gguf.stat().st_size / 1e6:.0f} MB GGUF | {direct_s:.1f} s | "
          f"{first_s:.1f} s | {cached_s:.1f} s |")


if __name__ == "__main__":
    main()
