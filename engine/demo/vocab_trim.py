"""Vocabulary trimming: a small Qwen2.5 tokenizer that segments the demo's text exactly as Qwen does.

At Qwen's 151,936-token vocabulary the output layer dominates a tiny model's CPU time. We keep only

* the 256 single-byte tokens (so *any* text still encodes),
* Qwen2.5's 22 added tokens,
* every token Qwen's BPE produces on the given texts, plus every intermediate token its merges pass
  through on the way (the closure), so each merge BPE applies on those texts survives,

renumber them compactly in Qwen's rank order and keep the merges whose parts and result are kept. The
merges kept are a subset of Qwen's, in the same order, containing every merge BPE applies on the texts, so
the trimmed tokenizer makes the same choices on them: ``trimmed ids == [old_to_new[i] for i in qwen ids]``.
"""
from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import regex
from transformers import PreTrainedTokenizerFast

from engine.demo.tokenizer import (
    QWEN2_PATTERN,
    QWEN25_ADDED_TOKENS,
    SPECIAL_START_ID,
    assemble_tokenizer,
    bytes_to_token,
    load_qwen_ranks,
)

logger = logging.getLogger(__name__)

_SPECIAL_SPLIT = re.compile("|".join(re.escape(text) for text, _ in QWEN25_ADDED_TOKENS))


@dataclass
class TrimmedTokenizer:
    """The trimmed tokenizer and the map from Qwen2.5 ids to its ids (byte tokens and specials included)."""

    tokenizer: PreTrainedTokenizerFast
    old_to_new: dict[int, int]


@functools.lru_cache(maxsize=1)
def _ranks() -> dict[bytes, int]:
    return load_qwen_ranks()


def pretokenize(text: str) -> list[bytes]:
    """Qwen's pre-tokens of ``text`` as UTF-8 bytes, special tokens removed (they are added tokens)."""
    pieces: list[bytes] = []
    for chunk in _SPECIAL_SPLIT.split(text):
        chunk = unicodedata.normalize("NFC", chunk)
        pieces.extend(match.encode("utf-8") for match in regex.findall(QWEN2_PATTERN, chunk))
    return pieces


def bpe_with_intermediates(piece: bytes, ranks: dict[bytes, int]) -> tuple[list[bytes], set[bytes]]:
    """tiktoken's BPE on one pre-token: its tokens and every token formed on the way.

    A pre-token that is itself a token is taken whole (tiktoken, ``ignore_merges``), but its merge path is
    still recorded: tokenizers built without ``ignore_merges`` (transformers' ``Qwen2Tokenizer`` rebuilds the
    BPE model that way) reach it through those merges.
    """
    parts = [piece[i : i + 1] for i in range(len(piece))]
    formed: set[bytes] = set(parts)
    while len(parts) > 1:
        best, best_rank = -1, None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = i, rank
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
        formed.add(parts[best])
    if piece in ranks:
        formed.add(piece)
        return [piece], formed
    return parts, formed


def _kept_tokens(texts: Iterable[str], ranks: dict[bytes, int]) -> set[bytes]:
    kept = {bytes([b]) for b in range(256)}
    seen: set[bytes] = set()
    for text in texts:
        for piece in pretokenize(text):
            if piece not in seen:
                seen.add(piece)
                kept |= bpe_with_intermediates(piece, ranks)[1]
    return kept


def _kept_merges(kept: list[bytes], ranks: dict[bytes, int]) -> list[tuple[str, str]]:
    """Qwen's merges among kept tokens, in Qwen's order (result rank, then the parts' ranks)."""
    kept_set = set(kept)
    merges = []
    for token in kept:
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in kept_set and right in kept_set:
                merges.append((ranks[token], ranks[left], ranks[right], left, right))
    merges.sort()
    return [(bytes_to_token(left), bytes_to_token(right)) for *_, left, right in merges]


def trim_tokenizer(texts: Iterable[str]) -> TrimmedTokenizer:
    """A Qwen2.5 tokenizer restricted to what ``texts`` need, with Qwen's segmentation of them."""
    ranks = _ranks()
    kept = sorted(_kept_tokens(texts, ranks), key=ranks.__getitem__)  # Qwen's rank order
    vocab = {bytes_to_token(token): new_id for new_id, token in enumerate(kept)}
    old_to_new = {ranks[token]: new_id for new_id, token in enumerate(kept)}
    added = []
    for offset, (text, special) in enumerate(QWEN25_ADDED_TOKENS):
        new_id = len(kept) + offset
        added.append((new_id, text, special))
        old_to_new[SPECIAL_START_ID + offset] = new_id
    tokenizer = assemble_tokenizer(vocab, _kept_merges(kept, ranks), added)
    logger.info("trimmed the Qwen2.5 vocabulary to %d tokens", len(tokenizer))
    return TrimmedTokenizer(tokenizer=tokenizer, old_to_new=old_to_new)
