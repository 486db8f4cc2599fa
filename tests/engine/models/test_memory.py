"""engine.models.memory: parameter counts from configs match real models, 4-bit estimates shrink the linear layers,
and a model that cannot fit is refused with one sentence (also by the chat service, before loading)."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from engine.models import memory
from engine.core.context import EngineError

sys.path.insert(0, str(Path(__file__).parents[1]))
from quant_helpers import make_tiny_model

QWEN05 = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
              intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True)


@pytest.mark.parametrize("config", [
    Qwen2Config(**QWEN05),
    LlamaConfig(hidden_size=256, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=4,
                intermediate_size=512, vocab_size=1000, tie_word_embeddings=False),
    LlamaConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, head_dim=48,
                intermediate_size=300, vocab_size=500, attention_bias=True),
])
def test_parameter_count_matches_the_real_model(config):
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert memory.count_parameters(config)["total"] == sum(p.numel() for p in model.parameters())


def test_qwen05_counts_and_4bit_linear_ratio():
    counts = memory.count_parameters(QWEN05 | {"model_type": "qwen2"})
    assert counts["total"] == 494_032_768  # Qwen2.5-0.5B's published size
    full = memory.weight_bytes(QWEN05 | {"model_type": "qwen2"}, "bfloat16")
    four = memory.weight_bytes(QWEN05 | {"model_type": "qwen2"}, "bfloat16", load_in_4bit=True)
    assert 0.25 < four["linear"] / full["linear"] <= 0.3
    assert four["rest"] == full["rest"]  # embeddings stay in 16 bits
    assert memory.estimate_model_bytes(QWEN05, "bfloat16", True) < memory.estimate_model_bytes(QWEN05, "bfloat16")


def test_estimate_from_a_folder_and_saved_4bit_config(tmp_path):
    folder = make_tiny_model(tmp_path / "m")
    estimate = memory.estimate_source_bytes(str(folder), "float32")
    weights = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(folder).parameters()) * 4
    assert estimate == int(weights * memory.OVERHEAD_FACTOR + memory.FIXED_OVERHEAD_BYTES)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"load_in_4bit": True}
    (folder / "config.json").write_text(json.dumps(config))
    assert memory.estimate_source_bytes(str(folder), "float32") < estimate
    assert memory.estimate_source_bytes(str(tmp_path / "nothing-here")) is None


def test_check_fits_refuses_with_one_sentence():
    with pytest.raises(EngineError) as err:
        memory.check_fits([("teacher", 1_200_000_000), ("student", 3_000_000_000)], "cpu", available=2_000_000_000)
    message = str(err.value)
    assert message.startswith("Loading teacher (≈1.2 GB) and student (≈3.0 GB) needs ≈4.2 GB")
    assert "≈2.0 GB" in message and message.count(".") <= 6
    memory.check_fits([("student", 10)], "cpu", available=100)  # fits: no error
    assert memory.available_bytes("cpu") > 0


def test_chat_refuses_a_model_that_does_not_fit(tmp_path, monkeypatch):
    from engine.chat.service import ChatService
    from engine.contract.protocol import EventWriter

    folder = make_tiny_model(tmp_path / "m")
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1000)
    out = io.StringIO()
    service = ChatService(EventWriter(stream=out), device="cpu")
    service.handle({"type": "load", "model": "student", "source": str(folder)})
    service.shutdown()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["type"] for e in events] == ["error"]
    assert "needs ≈" in events[0]["data"]["message"] and "≈1.0 KB" in events[0]["data"]["message"]
    assert "student" not in service.models
