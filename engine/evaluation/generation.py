"""Generate answers in batches and score them: what the evaluate stage, sequence-level KD (teacher answers) and
the quantization report all use.

Prompts are tokenized exactly as for training (:mod:`engine.training_data.formatting`), sorted by length so each batch
wastes little padding, left-padded (decoder-only models continue from the right edge), decoded greedily unless
the GenerationSpec asks for sampling, stopped at eos or ``<|im_end|>``, and returned in input order with only
the new tokens decoded. Decoding is defined by the GenerationSpec alone, not by a model's
generation_config.json (whose sampling defaults would make teacher and student decode differently).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import torch

from engine.core import heartbeat
from engine.training_data.formatting import encode_prompt, prompt_texts
from engine.contract.data.presets import Preset, get_preset
from engine.evaluation.scores import score_predictions
from engine.contract.spec import GenerationSpec

log = logging.getLogger(__name__)

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")
Progress = Callable[[int, int], None]


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """eos ids of the tokenizer and the model, plus the end-of-turn tokens the vocabulary knows."""
    ids: list[int] = []
    model_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, model_eos):
        ids += value if isinstance(value, list) else [value] if value is not None else []
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in STOP_TOKENS if t in vocab]
    return sorted(set(int(i) for i in ids))


def generation_config(gen: GenerationSpec, pad_id: int, stop_ids: list[int]) -> Any:
    from transformers import GenerationConfig

    kwargs: dict[str, Any] = dict(max_new_tokens=gen.max_new_tokens, do_sample=not gen.greedy,
                                  pad_token_id=pad_id, eos_token_id=stop_ids, num_beams=1)
    if not gen.greedy:
        kwargs.update(temperature=gen.temperature, top_p=gen.top_p, top_k=0)
    return GenerationConfig(**kwargs)


def context_of(model: Any) -> int | None:
    """The most positions the model reads (``max_position_embeddings``), None when its config does not say."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    context = getattr(text, "max_position_embeddings", None)
    return context if isinstance(context, int) and context > 0 else None


def fit_to_context(model: Any, encoded: list[list[int]], gen: GenerationSpec) -> tuple[list[list[int]], Any]:
    """Prompts and answer length that fit the model's context: past it, a model with learned positions fails
    with an index error and a rotary one answers from positions it never saw. The answer keeps at most half the
    context; a longer prompt loses its beginning (its end holds the question and the assistant's turn), with
    one warning saying how many."""
    import dataclasses

    context = context_of(model)
    if context is None:
        return encoded, gen
    answer = min(gen.max_new_tokens, max(1, context // 2))
    keep = context - answer
    cut = sum(len(ids) > keep for ids in encoded)
    if cut:
        log.warning("%d of %d prompts are longer than the %d tokens the model's %d-position context leaves beside "
                    "a %d-token answer; their beginnings were cut", cut, len(encoded), keep, context, answer)
    if answer < gen.max_new_tokens:
        log.warning("answers are limited to %d tokens (generation.max_new_tokens is %d): half the model's "
                    "%d-position context", answer, gen.max_new_tokens, context)
        gen = dataclasses.replace(gen, max_new_tokens=answer)
    return [ids[-keep:] if len(ids) > keep else ids for ids in encoded], gen


def _left_pad(rows: list[list[int]], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)  # [B, L]
    mask = torch.zeros((len(rows), longest), dtype=torch.long)  # [B, L]
    for i, row in enumerate(rows):
        if row:
            ids[i, longest - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, longest - len(row):] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def generate_answers(model: Any, tokenizer: Any, prompts: list[str], gen: GenerationSpec, device: str,
                     on_progress: Progress | None = None) -> list[str]:
    """The model's answer to each prompt string (as made by ``prompt_texts``), in the order given."""
    if not prompts:
        return []
    stop_ids = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    encoded, gen = fit_to_context(model, [encode_prompt(tokenizer, p) for p in prompts], gen)
    config = generation_config(gen, pad_id, stop_ids)
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))  # longest first: memory peaks early
    answers: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        with heartbeat.activity(f"generating {len(prompts)} answers in batches of {gen.batch_size}"):
            for start in range(0, len(order), gen.batch_size):
                batch = order[start:start + gen.batch_size]  # similar lengths: little padding per batch
                input_ids, attention_mask = _left_pad([encoded[i] for i in batch], pad_id, device)
                output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
                new_tokens = output[:, input_ids.shape[1]:]  # [B, T_new]
                for i, row in zip(batch, new_tokens.tolist()):
                    answers[i] = tokenizer.decode(_until_stop(row, stop_ids), skip_special_tokens=True).strip()
                if on_progress is not None:
                    on_progress(min(start + len(batch), len(order)), len(order))
    finally:
        model.train(was_training)
    return answers


def _until_stop(tokens: list[int], stop_ids: list[int]) -> list[int]:
    """New tokens up to the first stop token (generate pads finished rows; pad may be a real token id)."""
    stops = set(stop_ids)
    for n, token in enumerate(tokens):
        if token in stops:
            return tokens[:n]
    return tokens


_FENCE = re.compile(r"^\s*```[\w+-]*[ \t]*\n(.*?)\n?```\s*$", re.DOTALL)


def strip_code_fence(text: str) -> str:
    """The program inside a single surrounding ```lang … ``` fence (code presets' references have none)."""
    match = _FENCE.match(text)
    return match.group(1) if match else text


def evaluate_model(model: Any, tokenizer: Any, records: list[dict], preset: str | Preset, gen: GenerationSpec,
                   device: str, on_progress: Progress | None = None) -> tuple[dict, list[str]]:
    """(scores, predictions): answers to ``records`` scored by :func:`engine.evaluation.scores.score_predictions`.
    Predictions are returned as generated; for code presets a surrounding code fence is removed before scoring."""
    p = get_preset(preset)
    predictions = generate_answers(model, tokenizer, prompt_texts(tokenizer, records, p), gen, device,
                                   on_progress=on_progress)
    return score_answers(records, predictions, p), predictions


def score_answers(records: list[dict], predictions: list[str], preset: str | Preset) -> dict:
    """:func:`engine.evaluation.scores.score_predictions` of answers already generated (code presets: without
    a surrounding code fence)."""
    scored = [strip_code_fence(x) for x in predictions] if get_preset(preset).code else predictions
    return score_predictions(records, scored)


def answerer(model: Any, tokenizer: Any, preset: str | Preset, gen: GenerationSpec, device: str,
             on_progress: Progress | None = None) -> Callable[[list[dict]], list[str]]:
    """``answer(records) -> answers`` for one loaded model, called in parts (the probe, then the rest:
    engine/evaluation/budget.py); ``on_progress(done, None)`` counts answers across all the parts."""
    done = [0]

    def answer(records: list[dict]) -> list[str]:
        first = done[0]

        def step(n: int, _total: int) -> None:
            done[0] = first + n
            if on_progress is not None:
                on_progress(done[0], None)

        return generate_answers(model, tokenizer, prompt_texts(tokenizer, records, preset), gen, device,
                                on_progress=step)

    return answer


@torch.inference_mode()
def response_cross_entropy(model: Any, rows: Any, pad_id: int, batch_size: int, device: str) -> float | None:
    """Token-weighted cross-entropy of ``model`` on the response tokens of tokenized ``rows`` (input_ids,
    labels with -100 on prompt and padding): the ``eval/ce`` every stage and model reports, so SFT and KD
    compare. Only response positions are projected to the vocabulary."""
    from engine.training_data.collate import pad_collator

    from engine.models.hidden_states import unwrap_peft, last_hidden_state

    collate, head = pad_collator(pad_id), unwrap_peft(model).get_output_embeddings()
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            batch = collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)  # [B, L]
            labels = batch["labels"][:, 1:].to(device)  # [B, L-1]: position t predicts token t+1
            keep = labels != -100
            hidden = last_hidden_state(model, ids, mask)[:, :-1][keep]  # [N, H]
            logits = head(hidden.to(head.weight.dtype)).float()  # [N, V]
            total += float(torch.nn.functional.cross_entropy(logits, labels[keep], reduction="sum"))
            count += int(keep.sum())
    finally:
        model.train(was_training)
    return total / count if count else None


# ---------------------------------------------------------------- vLLM (CUDA only) -------------------------------
# Not exercised by the test suite: vLLM needs a CUDA GPU. Guarded so that nothing changes without it.

def vllm_usable(device: str) -> bool:
    """vLLM is installed, the run is on CUDA, and COMPRESSION_ENGINE_NO_VLLM does not switch it off."""
    import importlib.util
    import os

    return (device.startswith("cuda") and importlib.util.find_spec("vllm") is not None
            and os.environ.get("COMPRESSION_ENGINE_NO_VLLM", "") in ("", "0"))


def trl_vllm_args(device: str) -> dict:
    """GRPOConfig / DistillationConfig settings that make TRL generate with vLLM inside the training process
    (colocate mode) when vLLM is usable; empty otherwise (transformers' generate)."""
    if not vllm_usable(device):
        return {}
    return {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3}


class VllmAnswers:
    """Answers to already-templated prompts with vLLM's continuous batching (teacher answers on CUDA); one
    engine for all the chunks of a stage, released by :meth:`close`."""

    def __init__(self, folder: str) -> None:
        from vllm import LLM

        with heartbeat.activity(f"starting vLLM on {folder}"):
            self.llm = LLM(model=folder, dtype="auto", gpu_memory_utilization=0.5)

    def __call__(self, prompts: list[str], gen: GenerationSpec) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=gen.max_new_tokens, temperature=0.0 if gen.greedy else gen.temperature,
                                top_p=1.0 if gen.greedy else gen.top_p, skip_special_tokens=True)
        with heartbeat.activity(f"generating {len(prompts)} answers with vLLM"):
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outputs]  # vLLM keeps the input order

    def close(self) -> None:
        del self.llm
        torch.cuda.empty_cache()
