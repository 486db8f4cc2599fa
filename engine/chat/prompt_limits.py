"""How long a chat prompt may be, decided before any work: a model reads at most its context
(``max_position_embeddings``) of tokens, so a longer prompt is refused, and a prompt whose characters alone
cannot fit is refused before it is even tokenized (a 1 MB prompt must cost neither a minute of prefill nor a GB
of token arrays). An answer that would run past the context is shortened to fit, with a warning.

The character bound: no token covers more characters than its own vocabulary entry has (byte-level BPE spells
each byte as one character, SentencePiece each character as itself), so ``context × longest entry`` characters
certainly do not fit. Past :data:`CHARS_PER_TOKEN` the bound is no longer a proof but a limit: an average of more
than 16 characters per token is not text a chat model is given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.core.context import EngineError

CHARS_PER_TOKEN = 16


@dataclass(frozen=True)
class PromptLimits:
    context: int | None  # tokens the model reads at most (None: its config does not say)
    chars_per_token: int  # the most characters one token covers, capped at CHARS_PER_TOKEN

    @property
    def max_chars(self) -> int | None:
        return None if self.context is None else self.context * self.chars_per_token


def limits_of(model: Any, tokenizer: Any) -> PromptLimits:
    """A loaded model's limits, computed once at load (the vocabulary scan takes milliseconds)."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    context = getattr(text, "max_position_embeddings", None)
    try:
        longest = max((len(token) for token in tokenizer.get_vocab()), default=CHARS_PER_TOKEN)
    except Exception:  # noqa: BLE001 - a tokenizer without get_vocab: the cap is the bound
        longest = CHARS_PER_TOKEN
    return PromptLimits(context if isinstance(context, int) and context > 0 else None,
                        max(1, min(longest, CHARS_PER_TOKEN)))


def check_characters(limits: PromptLimits, messages: list[dict], model: str) -> None:
    """Refuse, without tokenizing, a conversation whose characters alone cannot fit the context."""
    chars = sum(len(m["content"]) for m in messages)
    if limits.max_chars is not None and chars > limits.max_chars:
        raise EngineError(f"the conversation is {chars:,} characters long, more than {model!r} can read (its context "
                          f"is {limits.context:,} tokens, at most about {limits.max_chars:,} characters); shorten it "
                          "or start a new conversation.")


def fit_answer(limits: PromptLimits, prompt_tokens: int, max_new_tokens: int, model: str) -> tuple[int, str]:
    """The answer length that fits after the prompt, and a warning when it had to be shortened; refuses a
    prompt that leaves no room at all."""
    if limits.context is None:
        return max_new_tokens, ""
    room = limits.context - prompt_tokens
    if room < 1:
        raise EngineError(f"the prompt is {prompt_tokens:,} tokens but {model!r} reads at most {limits.context:,} "
                          "(max_position_embeddings); shorten the conversation or start a new one.")
    if max_new_tokens <= room:
        return max_new_tokens, ""
    return room, (f"the answer is limited to {room:,} tokens (asked for {max_new_tokens:,}): the prompt takes "
                  f"{prompt_tokens:,} of {model!r}'s {limits.context:,}-token context.")
