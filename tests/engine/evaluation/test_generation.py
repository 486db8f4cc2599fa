"""engine.evaluation.generation with a tiny random Qwen2: order and count of answers, greedy determinism, batching
equal to
one-by-one generation (left padding right), stop tokens, progress calls, and evaluate_model's scores."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from engine.training_data.formatting import prompt_texts
from engine.evaluation.generation import (evaluate_model, generate_answers, response_cross_entropy, stop_token_ids,
                               strip_code_fence)
from engine.evaluation.scores import score_predictions
from engine.contract.spec import GenerationSpec

sys.path.insert(0, str(Path(__file__).parents[1]))
from data_helpers import record, tiny_qwen2, tiny_tokenizer

QUESTIONS = ["What is the capital of France?", "Fix the bug", "the cat sat on the mat and the cat sat again",
             "El niño comió pan", "Name 3 numbers", "def add(a, b):"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_qwen2(tok, seed=1)


@pytest.fixture(scope="module")
def prompts(tok):
    return prompt_texts(tok, [record(q, "x") for q in QUESTIONS], "dolly_en")


def _one_by_one(model, tok, prompts, max_new_tokens):
    """Reference: plain transformers generate on each unpadded prompt, decoded up to the first stop token."""
    stops = stop_token_ids(model, tok)
    answers = []
    for p in prompts:
        ids = torch.tensor([tok(p, add_special_tokens=False)["input_ids"]])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=stops, pad_token_id=tok.pad_token_id)
        new = out[0, ids.shape[1]:].tolist()
        new = new[:next((i for i, t in enumerate(new) if t in stops), len(new))]
        answers.append(tok.decode(new, skip_special_tokens=True).strip())
    return answers


@pytest.fixture(scope="module")
def reference(model, tok, prompts):
    return _one_by_one(model, tok, prompts, 10)


def test_batched_greedy_equals_one_by_one_in_input_order(model, tok, prompts, reference):
    batched = generate_answers(model, tok, prompts, GenerationSpec(max_new_tokens=10, batch_size=4), "cpu")
    assert len(batched) == len(prompts)
    assert batched == reference
    assert len(set(batched)) >= 3  # the prompts get different answers, so the order is really checked


def test_greedy_is_deterministic_and_batch_size_free(model, tok, prompts, reference):
    first = generate_answers(model, tok, prompts, GenerationSpec(max_new_tokens=10, batch_size=3), "cpu")
    again = generate_answers(model, tok, prompts, GenerationSpec(max_new_tokens=10, batch_size=3), "cpu")
    single = generate_answers(model, tok, prompts, GenerationSpec(max_new_tokens=10, batch_size=1), "cpu")
    assert first == again == single == reference


def test_progress_per_batch_and_empty_input(model, tok, prompts):
    calls = []
    generate_answers(model, tok, prompts, GenerationSpec(max_new_tokens=2, batch_size=4), "cpu",
                     on_progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 6), (6, 6)]
    assert generate_answers(model, tok, [], GenerationSpec(), "cpu") == []


def test_stops_at_end_of_turn(tok):
    """A model whose every step prefers <|im_end|> answers with the empty string, not special tokens."""
    model = tiny_qwen2(tok, seed=2)
    model.model.norm.register_forward_hook(lambda m, i, o: o * 0)  # all logits 0 …
    biased = torch.zeros(len(tok))
    biased[tok.convert_tokens_to_ids("<|im_end|>")] = 5.0  # … but the end of turn's
    model.lm_head.register_forward_hook(lambda m, i, o: o + biased)
    assert generate_answers(model, tok, ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"],
                            GenerationSpec(max_new_tokens=8), "cpu") == [""]
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(model, tok)


def test_sampling_follows_the_spec(model, tok, prompts):
    torch.manual_seed(0)
    a = generate_answers(model, tok, prompts, GenerationSpec(max_new_tokens=8, greedy=False, temperature=1.0), "cpu")
    torch.manual_seed(0)
    b = generate_answers(model, tok, prompts, GenerationSpec(max_new_tokens=8, greedy=False, temperature=1.0), "cpu")
    greedy = generate_answers(model, tok, prompts, GenerationSpec(max_new_tokens=8), "cpu")
    assert a == b and a != greedy


def test_evaluate_model_scores_its_predictions(model, tok):
    records = [record(q, "the cat sat on the mat", category="c" + str(i % 2), id=str(i))
               for i, q in enumerate(QUESTIONS)]
    scores, predictions = evaluate_model(model, tok, records, "dolly_en", GenerationSpec(max_new_tokens=6), "cpu")
    assert len(predictions) == len(records)
    assert scores == score_predictions(records, predictions)
    assert set(scores["per_category"]) == {"c0", "c1"} and scores["n"] == 6


def test_code_fences_are_stripped_for_scoring():
    assert strip_code_fence("```python\nprint(1)\n```") == "print(1)"
    assert strip_code_fence("print(1)") == "print(1)"
    assert strip_code_fence("Here:\n```python\nx\n```") == "Here:\n```python\nx\n```"


def test_response_cross_entropy_is_the_lm_loss_on_response_tokens(model, tok):
    """eval/ce (every stage, every model) equals transformers' own token-weighted LM loss over the batch."""
    from engine.training_data.formatting import tokenize_for_sft
    from engine.training_data.collate import pad_collator

    records = [record(q, "the cat sat on the mat " * (i + 1)) for i, q in enumerate(QUESTIONS)]
    rows = tokenize_for_sft(tok, records, 96, "dolly_en")
    ce = response_cross_entropy(model, rows, tok.pad_token_id, batch_size=4, device="cpu")
    batch = pad_collator(tok.pad_token_id)([rows[i] for i in range(len(rows))])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
    assert ce == pytest.approx(expected.item(), rel=1e-5)

