"""What a teacher/student pair allows for distillation, from their tokenizers and configs only (no weights): the
same vocabulary (token KD), the same real tokens with placeholder rows (a GGUF teacher: token KD), or different
tokenizers (cross-tokenizer KD or sequence-level KD). The decision itself is :func:`engine.contract.model_info.
kd_pairing`, so the studio's method page and the engine's preflight say the same sentence."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from engine.contract.model_info import KDPairing, ModelInfo, kd_pairing
from engine.contract.spec import ModelSpec
from engine.core.context import EngineError
from engine.models.loading import load_config, load_tokenizer, real_vocab


def vocab_digest(tokenizer: Any) -> str:
    """A hash of the tokenizer's real token → id table: equal exactly when token KD can pair two models."""
    items = sorted(real_vocab(tokenizer).items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()[:32]


def with_tokenizer(info: ModelInfo, tokenizer: Any) -> ModelInfo:
    """``info`` with the tokenizer's real vocabulary size and digest (what :func:`kd_pairing` compares)."""
    return dataclasses.replace(info, tokenizer_tokens=len(real_vocab(tokenizer)),
                               vocab_digest=vocab_digest(tokenizer))


def _output_rows(spec: ModelSpec) -> int | None:
    config = load_config(spec.source)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "vocab_size", None)


def pair_models(teacher: ModelSpec, student: ModelSpec) -> KDPairing:
    """The pair's :class:`KDPairing`, reading both tokenizers and configs (cached by the hub client)."""
    infos = [with_tokenizer(ModelInfo(source=s.source, vocab_size=_output_rows(s)), load_tokenizer(s))
             for s in (teacher, student)]
    return kd_pairing(*infos)


def check_method(stage_name: str, method: str, pairing: KDPairing) -> None:
    """Refuse a distillation method the pair cannot do, with the pair's reason and the methods it can."""
    if method not in pairing.methods:
        raise EngineError(f"{stage_name}.distill.method: {method} is not possible for this teacher and student. "
                          f"{pairing.reason} Set distill.method to {' or '.join(pairing.methods)}.")
