"""Test helpers for the data / metrics / evaluation tests: a tiny byte-level BPE tokenizer trained in
milliseconds (with or without a Qwen-style chat template) and a tiny random Qwen2 model over its vocabulary."""
from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "What is the capital of France? Paris is the capital of France.",
    "Translate to Spanish: the child ate bread. El niño comió pan.",
    "Fix the bug in this Python program. print(1 / 0) ZeroDivisionError",
    "Context: Instruction: Response: Contexto: Respuesta en español árbol canción",
    "### Instruction:\n### Response:\nuser assistant system\n",
    "def add(a, b):\n    return a + b\n",
    "0 1 2 3 4 5 6 7 8 9 the cat sat on the mat",
]


def tiny_tokenizer(chat_template: bool = True, vocab_size: int = 400):
    """A PreTrainedTokenizerFast: byte-level BPE, specials <|endoftext|> (pad) and <|im_end|> (eos)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(CORPUS * 3, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=["<|im_start|>"])
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_qwen2(tokenizer, seed: int = 0, layers: int = 2, hidden: int = 32):
    """A random-init Qwen2 causal LM (float32, eval mode) sized to ``tokenizer``. Untied embeddings: a tied random
    model mostly repeats its last input token (the newline after the assistant header), i.e. answers blank."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.pad_token_id)
    return Qwen2ForCausalLM(config).eval()


def record(instruction: str, response: str, **extra) -> dict:
    """A canonical record with defaults."""
    base = {"id": extra.pop("id", instruction[:20]), "instruction": instruction, "context": "", "response": response,
            "category": "general", "language": "en", "answer": None, "tests": None, "reasoning": None}
    base.update(extra)
    return base


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path
