"""Tiny Qwen2-architecture teacher and student for the demo kit (random init, trained by the pipeline).

Same architecture as Qwen2.5 (grouped-query attention with q/k/v biases, SwiGLU MLP, RMSNorm, RoPE θ=1e6,
tied input/output embeddings like Qwen2.5-0.5B), only smaller: the teacher is several times bigger than the
student so that distillation has something to transfer. Sizes were chosen by bench/demo_calibration.py.
"""
from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

logger = logging.getLogger(__name__)

Role = Literal["teacher", "student"]

#: Architecture per role: hidden size, layers, attention heads, key/value heads, MLP width.
SIZES: dict[str, dict[str, int]] = {
    # 1.9 M: a 256-wide, 3.3 M teacher reached the same ROUGE-L (0.68 vs 0.68 after 1,200 steps) at 1.5x the cost.
    "teacher": {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 4,
                "num_key_value_heads": 2, "intermediate_size": 512},
    # 128 wide (not 96): bitsandbytes' CPU 4-bit kernel needs in_features % 64 == 0, so every layer quantizes
    "student": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "intermediate_size": 256},
}
MAX_POSITIONS = 512
ROPE_THETA = 1_000_000.0


def padded_vocab_size(n_tokens: int, multiple: int = 64) -> int:
    """Embedding rows for ``n_tokens`` tokens, padded like Qwen's (151,665 tokens → 151,936 rows)."""
    return -(-n_tokens // multiple) * multiple


def tiny_qwen2_config(role: Role, vocab_size: int, *, bos_token_id: int | None = None,
                      eos_token_id: int | None = None, pad_token_id: int | None = None,
                      **overrides: Any) -> Qwen2Config:
    """The Qwen2 config of the demo ``role``; pass the trimmed tokenizer's special ids (the kit does).

    Like Qwen2.5-Instruct: bos = <|endoftext|>, eos = <|im_end|>, and pad = <|endoftext|>.
    """
    if role not in SIZES:
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")
    if vocab_size < 256:
        raise ValueError(f"vocab_size must cover the 256 byte tokens, got {vocab_size}")
    fields: dict[str, Any] = {**SIZES[role], "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA}}
    fields.update(overrides)  # calibration sweeps
    return Qwen2Config(
        vocab_size=vocab_size,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_sliding_window=False,
        attention_dropout=0.0,
        hidden_act="silu",
        initializer_range=0.02,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        **fields,
    )


def build_tiny_model(role: Role, vocab_size: int, seed: int, *, bos_token_id: int | None = None,
                     eos_token_id: int | None = None, pad_token_id: int | None = None,
                     **overrides: Any) -> Qwen2ForCausalLM:
    """A randomly initialised (deterministic in ``seed``) demo model in float32; ``overrides`` go to the config."""
    config = tiny_qwen2_config(role, vocab_size, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                               pad_token_id=pad_token_id, **overrides)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    # Qwen2.5-Instruct stops on <|im_end|> and <|endoftext|>; generation is greedy unless a caller asks.
    eos = [i for i in (eos_token_id, bos_token_id) if i is not None]
    model.generation_config = GenerationConfig(
        bos_token_id=bos_token_id, eos_token_id=eos or None, pad_token_id=pad_token_id, do_sample=False
    )
    logger.debug("built the demo %s: %d parameters", role, count_parameters(model))
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
