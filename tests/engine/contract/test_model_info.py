"""``inspect`` returns one typed result (engine.contract.model_info.ModelInfo) that survives the trip through
the JSON line the studio reads."""
from __future__ import annotations

import sys
from pathlib import Path

from engine.contract.model_info import ModelInfo, kd_compatibility
from engine.models.inspection import inspect_model

sys.path.insert(0, str(Path(__file__).parents[1]))
from data_helpers import tiny_qwen2, tiny_tokenizer


def test_inspect_counts_parameters_and_round_trips_through_json(tmp_path):
    import json

    tokenizer = tiny_tokenizer()
    model = tiny_qwen2(tokenizer, layers=3, hidden=32)
    model.save_pretrained(tmp_path)
    info = inspect_model(str(tmp_path))
    assert info.parameters == sum(p.numel() for p in model.parameters())
    assert (info.layers, info.hidden_size, info.vocab_size) == (3, 32, len(tokenizer))
    assert info.architecture == "Qwen2ForCausalLM"
    assert ModelInfo.from_dict(json.loads(info.to_json())) == info
    assert "3 layers × 32" in info.describe()


def test_model_info_reads_older_and_newer_engines():
    assert ModelInfo.from_dict({"architecture": "X", "future_key": 1}).architecture == "X"
    assert ModelInfo.from_dict({}).describe().startswith("unknown architecture")
    assert "token-level KD" in kd_compatibility(ModelInfo(vocab_size=10, vocab_digest="a"),
                                                ModelInfo(vocab_size=10, vocab_digest="a"))
    assert "sequence-level" in kd_compatibility(ModelInfo(vocab_size=10, vocab_digest="a"),
                                                ModelInfo(vocab_size=12, vocab_digest="b"))
