"""A causal LM's final hidden states without its LM head, through peft wrappers: what every chunked loss and
chunked scorer starts from (the head is then applied a chunk of tokens at a time)."""
from __future__ import annotations

from torch import Tensor, nn


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (LoRA layers stay injected in it), else the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def last_hidden_state(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Final hidden state [B, L, H] of a causal LM's backbone, skipping its LM head (works through peft)."""
    inner = unwrap_peft(model)
    backbone = getattr(inner, "base_model", inner)
    if backbone is inner:  # models whose base_model_prefix does not name a sub-module
        backbone = inner.get_decoder()
    out = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state
