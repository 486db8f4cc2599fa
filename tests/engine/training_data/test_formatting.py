"""engine.training_data.formatting: prompts from preset templates, chat-template SFT examples with the loss on the
response
only, truncation rules, and the plain fallback for tokenizers without a chat template."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine.training_data.formatting import prompt_messages, prompt_texts, tokenize_for_sft
from engine.training_data.formatting import FALLBACK_PROMPT, IGNORE_INDEX, encode_example, truncate_pair

sys.path.insert(0, str(Path(__file__).parents[1]))
from data_helpers import record, tiny_tokenizer


@pytest.fixture(scope="module")
def chat_tok():
    return tiny_tokenizer(chat_template=True)


@pytest.fixture(scope="module")
def plain_tok():
    return tiny_tokenizer(chat_template=False)


def test_prompt_messages_follow_each_preset():
    rec = record("What is the capital of France?", "Paris.", context="France is in Europe.")
    assert prompt_messages(rec, "dolly_en") == [
        {"role": "user", "content": "What is the capital of France?\n\nContext: France is in Europe."}]
    assert prompt_messages({**rec, "context": ""}, "dolly_en")[0]["content"] == "What is the capital of France?"
    es = record("¿Cuál es la capital de Francia?", "París.", context="Francia está en Europa.", language="es")
    content = prompt_messages(es, "dolly_es")[0]["content"]
    assert content.startswith("Responde en español") and content.endswith("Contexto: Francia está en Europa.")
    assert prompt_messages(es, "local")[0]["content"].endswith("\n\nContexto: Francia está en Europa.")
    bug = record("print(1 / 0)\n", "print(1)\n", context="ZeroDivisionError: division by zero")
    content = prompt_messages(bug, "bugnet")[0]["content"]
    assert content.startswith("Fix the bug in this Python program.")
    assert "ZeroDivisionError: division by zero" in content and "```python\nprint(1 / 0)\n```" in content
    assert prompt_messages(record("Add two numbers.", "def f"), "pytorrent")[0]["content"].endswith("Add two numbers.")
    assert prompt_messages(record("q", "a", context="c"), "demo")[0]["content"] == "q\n\nc"


def test_prompt_texts_use_the_chat_template(chat_tok, plain_tok):
    rec = record("What is the capital of France?", "Paris.")
    (text,) = prompt_texts(chat_tok, [rec], "dolly_en")
    assert text == "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    (plain,) = prompt_texts(plain_tok, [rec], "dolly_en")
    assert plain == FALLBACK_PROMPT.format(content="What is the capital of France?")


def test_sft_labels_cover_only_the_response_and_end_of_turn(chat_tok):
    rec = record("What is the capital of France?", "Paris is the capital of France.")
    data = tokenize_for_sft(chat_tok, [rec, rec], 256, "dolly_en")
    assert len(data) == 2 and set(data.column_names) == {"input_ids", "attention_mask", "labels"}
    ids, labels = data[0]["input_ids"], data[0]["labels"]
    prompt_len = sum(1 for x in labels if x == IGNORE_INDEX)
    prompt = chat_tok.decode(ids[:prompt_len])
    assert prompt == prompt_texts(chat_tok, [rec], "dolly_en")[0]
    assert labels[prompt_len:] == ids[prompt_len:]
    assert chat_tok.decode(ids[prompt_len:]) == "Paris is the capital of France.<|im_end|>"
    assert ids[-1] == chat_tok.eos_token_id
    assert data[0]["attention_mask"] == [1] * len(ids)


def test_fallback_layout_without_chat_template(plain_tok):
    rec = record("Name a fruit.", "An apple.")
    example = encode_example(plain_tok, rec, "dolly_en", 256)
    n_prompt = example["labels"].count(IGNORE_INDEX)
    assert plain_tok.decode(example["input_ids"][:n_prompt]) == "### Instruction:\nName a fruit.\n\n### Response:\n"
    assert plain_tok.decode(example["input_ids"][n_prompt:]) == "An apple.<|im_end|>"


def test_truncation_cuts_the_response_end_first(chat_tok):
    rec = record("Short question?", " ".join(["the cat sat on the mat"] * 20))
    full = encode_example(chat_tok, rec, "dolly_en", 10_000)
    n_prompt = full["labels"].count(IGNORE_INDEX)
    cut = encode_example(chat_tok, rec, "dolly_en", n_prompt + 7)
    assert len(cut["input_ids"]) == n_prompt + 7
    assert cut["input_ids"] == full["input_ids"][:n_prompt + 7]  # prompt whole, response start kept
    assert cut["labels"][n_prompt:] == full["input_ids"][n_prompt:n_prompt + 7]


def test_truncation_of_an_overlong_prompt_keeps_some_response():
    prompt, target = list(range(100)), list(range(1000, 1040))
    p, t = truncate_pair(prompt, target, 64)
    assert len(p) + len(t) == 64
    assert t == target[:16]  # max_length // 4 response tokens survive
    assert p == prompt[-48:]  # the prompt's end (assistant header) is kept, its start dropped
    assert truncate_pair(prompt[:10], target[:5], 64) == (prompt[:10], target[:5])
    p, t = truncate_pair(list(range(60)), list(range(100, 110)), 64)
    assert p == list(range(6, 60)) and t == list(range(100, 110))  # 4 left < min(10, 16): prompt cut, response whole


def test_max_length_respected_for_every_row(chat_tok):
    records = [record("Question " * n, "answer " * (30 - n), id=str(n)) for n in range(1, 30, 4)]
    data = tokenize_for_sft(chat_tok, records, 24, "dolly_en")
    assert all(len(row) <= 24 for row in data["input_ids"])
    assert all(any(x != IGNORE_INDEX for x in row) for row in data["labels"])
