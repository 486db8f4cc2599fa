"""The published configs of the paper's models (the hub's config.json values), so that memory plans and
``inspect`` describe them without network access. Data only: both engine/models/memory_plan.py and
engine/models/loading.py read it, and it imports neither (which would close an import loop between them)."""
from __future__ import annotations

KNOWN_CONFIGS: dict[str, dict] = {
    "qwen2.5-0.5b": dict(model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(model_type="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         tie_word_embeddings=True),
    "qwen2.5-3b": dict(model_type="qwen2", vocab_size=151936, hidden_size=2048, intermediate_size=11008,
                       num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-7b": dict(model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                       num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       tie_word_embeddings=False),
}


def known_config_name(source: str) -> str | None:
    """The KNOWN_CONFIGS entry of a hub id of the paper's models (any -Instruct / -Coder variant), else None."""
    name = source.rsplit("/", 1)[-1].lower().replace("-instruct", "").replace("-coder", "")
    if source.count("/") == 1 and name in KNOWN_CONFIGS and not source.startswith((".", "/", "~")):
        return name
    return None
