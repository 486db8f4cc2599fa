"""Is a 4-bit folder smaller than its 16-bit source (issue 22, item 5)? A random Qwen2 saved in float16 is quantized
twice: once the old way (every tensor bitsandbytes does not quantize kept in the float32 compute dtype) and once
as ``quantize_model`` does now (those tensors in the source's storage dtype); the weight files are compared.
Not a test (tests/engine/quantization/test_four_bit.py asserts the same on a tiny model).

Run: ``python bench/quant_source_sizes.py [FOLDER]`` (FOLDER: where to write the three models; default a temporary
one).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "engine"))

import torch  # noqa: E402 - after the sys.path lines above
from quant_helpers import tiny_tokenizer  # noqa: E402 - likewise
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402 - likewise

from engine.contract.spec import QuantizeSpec  # noqa: E402 - likewise
from engine.models.loading import save_model  # noqa: E402 - likewise
from engine.quantization.four_bit import quantize_in_memory, quantize_model  # noqa: E402 - likewise
from engine.quantization.report import weight_file_bytes  # noqa: E402 - likewise


def main(root: Path) -> None:
    source, tokenizer = root / "source-fp16", tiny_tokenizer()
    config = Qwen2Config(hidden_size=512, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=8,
                         num_key_value_heads=2, vocab_size=32000, tie_word_embeddings=False)
    Qwen2ForCausalLM(config).to(torch.float16).save_pretrained(source)
    tokenizer.save_pretrained(source)
    q = QuantizeSpec(compute_dtype="float32")
    model, tok = quantize_in_memory(str(source), q, "cpu")  # the old path: unquantized tensors in float32
    save_model(model, tok, root / "4bit-before", "# 4-bit, unquantized tensors in float32\n")
    quantize_model(str(source), root / "4bit-now", q, "cpu")
    base = weight_file_bytes(source)
    for name in ("source-fp16", "4bit-before", "4bit-now"):
        size = weight_file_bytes(root / name)
        sys.stdout.write(f"{name:<12} {size:>12,} bytes  {size / base:.2f} × the source\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="quant-sizes-")))
