"""Heartbeats (engine/core/heartbeat.py): status events every few seconds while a model loads, a GGUF file unpacks or
answers generate, so the GUI never waits in silence; nothing once the work is done or without a writer."""
from __future__ import annotations

import io
import json
import time

import pytest

from engine.models import gguf_source

from engine.core import heartbeat
from engine.contract.protocol import EventWriter


@pytest.fixture
def beats(monkeypatch):
    monkeypatch.setattr(heartbeat, "INTERVAL_S", 0.2)
    out = io.StringIO()
    heartbeat.attach(EventWriter(stream=out), "stage_x")
    yield lambda: [json.loads(line)["data"] for line in out.getvalue().splitlines()]
    heartbeat.attach(None, "")


def test_status_events_while_an_activity_runs_and_none_after(beats):
    with heartbeat.activity("loading the teacher"):
        time.sleep(1.0)
    during = beats()
    assert len(during) >= 3 and all(e["state"] == "running" and e["stage"] == "stage_x" for e in during)
    assert during[0]["message"].startswith("loading the teacher (") and during[-1]["message"].endswith(" s)")
    time.sleep(0.6)
    assert len(beats()) == len(during)  # the activity is over: silence


def test_a_slow_gguf_unpack_and_a_slow_generation_beat(beats, monkeypatch, tmp_path):
    """The unpack and the generation loop are wrapped in activities (their real work is replaced by a pause)."""
    import torch

    from engine.contract.spec import GenerationSpec
    from engine.evaluation.generation import generate_answers

    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path))
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF")
    monkeypatch.setattr(gguf_source, "check_supported", lambda path: {"types": {}})
    monkeypatch.setattr(gguf_source, "_unpack", lambda *a: time.sleep(0.7))
    gguf_source.unpacked_folder(fake)
    assert any(e["message"].startswith("unpacking model.gguf") for e in beats())

    class SlowModel(torch.nn.Module):
        training = False
        generation_config = None

        def generate(self, input_ids, **kwargs):
            time.sleep(0.7)
            return input_ids

    class Tok:
        eos_token_id, pad_token_id = 0, 0

        def get_vocab(self):
            return {}

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1, 2]}

        def decode(self, ids, skip_special_tokens=True):
            return ""

    generate_answers(SlowModel(), Tok(), ["a prompt"], GenerationSpec(batch_size=1), "cpu")
    assert any(e["message"].startswith("generating 1 answers") for e in beats())


def test_repeating_calls_back_while_the_block_runs_and_stops_after():
    calls = []
    with heartbeat.repeating(calls.append, interval_s=0.1):
        time.sleep(0.55)
    count = len(calls)
    assert count >= 3 and calls == sorted(calls) and calls[0] >= 0.1
    time.sleep(0.3)
    assert len(calls) == count
