"""Batched generation (evaluation, teacher answers, the quantization report) within the model's context
(issue 19, item 8's class outside the chat service): a prompt longer than the context loses its beginning and an
answer longer than half of it is shortened, each with a warning, instead of an index error for a model with
learned positions."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from engine.contract.spec import GenerationSpec
from engine.evaluation.generation import generate_answers

sys.path.insert(0, str(Path(__file__).parents[1]))
from quant_helpers import tiny_tokenizer


@pytest.fixture(scope="module")
def gpt2():
    """A tiny GPT-2: learned position embeddings, 64 of them (position 64 does not exist)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config).eval(), tokenizer


def test_prompts_and_answers_past_the_context_are_cut_with_a_warning(gpt2, caplog):
    model, tokenizer = gpt2
    prompts = ["~" * 100, "short prompt"]  # '~' is one token each: 100 tokens for a 64-position model
    with caplog.at_level(logging.WARNING, logger="engine.evaluation.generation"):
        answers = generate_answers(model, tokenizer, prompts, GenerationSpec(max_new_tokens=50, batch_size=2), "cpu")
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "1 of 2 prompts are longer than the 32 tokens" in said
    assert "answers are limited to 32 tokens (generation.max_new_tokens is 50)" in said


def test_prompts_that_fit_are_left_alone(gpt2, caplog):
    model, tokenizer = gpt2
    with caplog.at_level(logging.WARNING, logger="engine.evaluation.generation"):
        generate_answers(model, tokenizer, ["short prompt"], GenerationSpec(max_new_tokens=8), "cpu")
    assert not caplog.records
