"""Memory estimates before loading: how many bytes a model will take, how many the machine has free, and a
clear refusal when they do not fit (instead of the system killing the engine halfway through a load).

The estimate counts parameters from the config alone (no weights are read):

* embeddings ``V·h`` and, unless tied, an output layer ``V·h``;
* per layer: attention ``h·(n_q·d) + 2·h·(n_kv·d) + (n_q·d)·h`` (grouped-query attention: ``n_kv`` key/value
  heads of width ``d = head_dim``), biases where the architecture has them (Qwen2: q/k/v; ``attention_bias``:
  q/k/v/o), an MLP of ``3·h·I``
  (gated: gate, up, down) or ``2·h·I`` (plain), and two RMS/LayerNorm vectors; plus the final norm.

In 4 bits (bitsandbytes) only the linear layers inside the blocks are quantized: 4 bits per weight plus one
absmax per 64-weight block — a float32 (0.5 bit/weight) or, with double quantization, an 8-bit code whose own
float32 constants cover 256 blocks (≈0.127 bit/weight). Embeddings, the output layer, norms and biases keep the
load dtype.

The resident estimate is ``weights × OVERHEAD_FACTOR + FIXED_OVERHEAD_BYTES`` (+ the 4-bit repack, see
``estimate_model_bytes``): the factor covers the allocator's slack, the KV cache and logits of chat-length
generations; the fixed part covers per-model buffers (rotary tables, generation config, tokenizer). Checked
against measured RSS in bench/RESULTS_quant.md (Qwen2.5-0.5B dimensions: 16-bit estimate 1.25 GB vs 1.23 GB
measured; 4-bit 0.99 GB vs 0.96 GB).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engine.contract.safe_json import load_json_file
from engine.core.context import EngineError

log = logging.getLogger(__name__)

OVERHEAD_FACTOR = 1.2
FIXED_OVERHEAD_BYTES = 64 * 2**20
BLOCK_SIZE = 64  # bitsandbytes' 4-bit block size
DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "float64": 8}
_PLAIN_MLP_TYPES = ("gpt2", "gpt_neox", "gptj", "opt", "phi", "falcon", "bloom", "gpt_bigcode")
_QKV_BIAS_TYPES = ("qwen2", "qwen2_moe")


def _config_dict(config_or_dir: Any) -> dict:
    """A plain dict of the (text) config from a config object, a dict, a folder, or any model source."""
    if isinstance(config_or_dir, dict):
        config = dict(config_or_dir)
    elif isinstance(config_or_dir, (str, Path)):
        path = Path(config_or_dir).expanduser()
        if path.is_dir() and (path / "config.json").is_file():
            config = load_json_file(path / "config.json")  # JSONProblem (a ValueError) for what is not data
            if not isinstance(config, dict):
                raise ValueError(f"{path / 'config.json'} holds {type(config).__name__}, not a JSON object")
        else:
            from engine.models.loading import load_config  # hub ids, GGUF files, demo:* sources

            config = load_config(str(config_or_dir)).to_dict()
    else:
        config = config_or_dir.to_dict()
    text = config.get("text_config")
    return {**config, **text} if isinstance(text, dict) else config


def count_parameters(config_or_dir: Any) -> dict[str, int]:
    """Parameter counts by part: ``embedding``, ``lm_head``, ``linear`` (quantizable block weights),
    ``other`` (biases, norms) and ``total``."""
    c = _config_dict(config_or_dir)
    h, layers, vocab = int(c["hidden_size"]), int(c["num_hidden_layers"]), int(c["vocab_size"])
    n_q = int(c.get("num_attention_heads") or 1)
    n_kv = int(c.get("num_key_value_heads") or n_q)
    d = int(c.get("head_dim") or h // n_q)
    inter = int(c.get("intermediate_size") or 4 * h)
    mlp_mats = 2 if c.get("model_type") in _PLAIN_MLP_TYPES else 3
    attn = h * n_q * d + 2 * h * n_kv * d + n_q * d * h
    mlp = mlp_mats * h * inter
    qwen_style = c.get("model_type") in _QKV_BIAS_TYPES  # Qwen2: biases on q/k/v only
    llama_style = bool(c.get("attention_bias")) and not qwen_style  # attention_bias: on q/k/v and o
    bias = (n_q * d + 2 * n_kv * d) * (qwen_style or llama_style) + h * llama_style
    embedding = vocab * h
    lm_head = 0 if c.get("tie_word_embeddings", False) else vocab * h
    linear = layers * (attn + mlp)
    other = layers * (bias + 2 * h) + h
    return {"embedding": embedding, "lm_head": lm_head, "linear": linear, "other": other,
            "total": embedding + lm_head + linear + other}


def loaded_parameters(model: Any) -> int:
    """The parameters of a loaded model as its config has them. A bitsandbytes 4-bit weight is stored packed (two
    values a byte, and repacked on the CPU's first inference), so its ``numel()`` is about half the layer's: the
    original shape, kept in its ``quant_state``, is counted instead (a 484 k demo student read as 337 k)."""
    total = 0
    for param in model.parameters():
        shape = getattr(getattr(param, "quant_state", None), "shape", None)
        if shape is None:
            total += param.numel()
            continue
        count = 1
        for dim in shape:
            count *= int(dim)
        total += count
    return total


def dtype_bytes(dtype: Any) -> int:
    """Bytes per element of a dtype given as torch.dtype or name; ``auto`` counts as float32 (the larger)."""
    name = str(dtype).replace("torch.", "")
    return DTYPE_BYTES.get(name, 4)


def bits_per_4bit_weight(double_quant: bool = True) -> float:
    """Storage of one 4-bit weight including its share of the block constants."""
    if double_quant:
        return 4 + 8 / BLOCK_SIZE + 32 / (BLOCK_SIZE * 256)
    return 4 + 32 / BLOCK_SIZE


def weight_bytes(config_or_dir: Any, dtype: Any = "float32", load_in_4bit: bool = False,
                 double_quant: bool = True) -> dict[str, int]:
    """Bytes of the weights by part (``linear`` is what 4 bits shrink), without any runtime overhead."""
    counts = count_parameters(config_or_dir)
    size = dtype_bytes(dtype)
    linear = counts["linear"] * (bits_per_4bit_weight(double_quant) / 8 if load_in_4bit else size)
    rest = (counts["embedding"] + counts["lm_head"] + counts["other"]) * size
    return {"linear": int(linear), "rest": int(rest), "total": int(linear + rest)}


def estimate_model_bytes(config_or_dir: Any, dtype: Any = "float32", load_in_4bit: bool = False) -> int:
    """Resident bytes a loaded model will need: weights × OVERHEAD_FACTOR + FIXED_OVERHEAD_BYTES, and in 4 bits
    twice the 4-bit linear bytes more (bitsandbytes' CPU kernel repacks them into a second copy on the first
    inference while the pages of the first stay mapped; measured in bench/RESULTS_quant.md)."""
    parts = weight_bytes(config_or_dir, dtype, load_in_4bit)
    repack = 2 * parts["linear"] if load_in_4bit else 0
    return int(parts["total"] * OVERHEAD_FACTOR + repack + FIXED_OVERHEAD_BYTES)


def available_bytes(device: str = "cpu") -> int:
    """Memory free for new models: free GPU memory on CUDA, otherwise the system's available RAM."""
    if str(device).startswith("cuda"):
        import torch

        index = int(str(device).split(":")[1]) if ":" in str(device) else torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(index)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def format_bytes(n: float) -> str:
    """``≈1.2 GB`` style (decimal units, as file managers show them)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"≈{n / scale:.1f} {unit}"
    return f"≈{int(n)} B"


def check_fits(models: list[tuple[str, int]], device: str = "cpu", available: int | None = None) -> None:
    """Raise EngineError with one sentence when ``models`` (name, estimated bytes) cannot fit on ``device``."""
    if not models:
        return
    free = available_bytes(device) if available is None else available
    need = sum(b for _, b in models)
    if need <= free:
        return
    parts = [f"{name} ({format_bytes(b)})" for name, b in models]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + f" and {parts[-1]}"
    where = "GPU memory" if str(device).startswith("cuda") else "memory"
    raise EngineError(f"Loading {listed} needs {format_bytes(need)} but this machine has {format_bytes(free)} "
                      f"of {where} free; unload a model, close other programs, or load it in 4 bits.")


def estimate_source_bytes(source: str, dtype: Any = "float32", load_in_4bit: bool = False) -> int | None:
    """The estimate for a model source (folder, GGUF, hub id, demo:*), or None when its config is unreadable
    (e.g. a hub id without network): the load itself will then say what is wrong."""
    try:
        config = _config_dict(source)
        if config.get("quantization_config"):  # a saved 4-bit folder: its linear layers are already small
            load_in_4bit = True
        return estimate_model_bytes(config, dtype, load_in_4bit)
    except (EngineError, OSError, ValueError, KeyError, TypeError, ImportError) as exc:
        log.info("no memory estimate for %s (%s)", source, exc)
        return None
