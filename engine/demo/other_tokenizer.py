"""The demo kit's second tokenizer, for cross-tokenizer distillation on CPU: a byte-level BPE *trained* with the
``tokenizers`` library on the demo's own task text, so it splits words differently from the trimmed Qwen2.5
tokenizer (no single-digit rule, its own merges, its own numbering), with Zephyr-style chat markers
(``<|user|>``, ``<|assistant|>``, ``</s>``) instead of ChatML. Saved as an ordinary Hugging Face tokenizer
folder; built offline in about a second, deterministically (the trainer is fed the texts in a fixed order).
"""
from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

VOCAB_SIZE = 1024  # the demo's Qwen vocabulary has ~1,430 tokens: a different size, a different split
EOS, PAD, BOS = "</s>", "<pad>", "<s>"
SPECIALS = (PAD, BOS, EOS, "<|system|>", "<|user|>", "<|assistant|>")

#: Zephyr's chat layout: each turn ends with </s>; the generation prompt opens the assistant turn.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|' + message.role + '|>\\n' + message.content + '</s>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}"
)


def train_other_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """A byte-level BPE of ``vocab_size`` tokens learned from ``texts`` (specials first, ids 0–5)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[AddedToken(t, special=True)
                                                                         for t in SPECIALS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(list(texts), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=PAD, bos_token=BOS,
                                        unk_token=None, additional_special_tokens=list(SPECIALS[3:]),
                                        clean_up_tokenization_spaces=False, model_max_length=32768)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "right"
    return tokenizer
