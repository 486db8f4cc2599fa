"""Heartbeats (engine/core/heartbeat.py): a status event whenever the run has been silent for a few seconds, naming
what runs (a model loading, a GGUF file unpacking, answers generating, the stage's phase), so the GUI never waits
in silence; nothing once detached or without a writer. The slow training step of a real run:
test_heartbeat_slow_step.py."""
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


def test_status_events_while_an_activity_runs_then_the_phase_and_none_after_detach(beats):
    with heartbeat.activity("loading the teacher"):
        time.sleep(1.0)
    during = beats()
    assert len(during) >= 3 and all(e["state"] == "running" and e["stage"] == "stage_x" for e in during)
    assert during[0]["message"].startswith("loading the teacher (") and during[-1]["message"].endswith(" s)")
    heartbeat.phase("training step 2/5, micro-batch 1/4")
    time.sleep(0.6)
    after = beats()[len(during):]  # the activity is over, the stage is not: the watchdog names the phase
    assert after and all(e["message"].startswith("training step 2/5, micro-batch 1/4 (") for e in after)
    heartbeat.detail("loss chunk 3/8")  # where inside the phase: said after it, on the phase's clock
    time.sleep(0.6)
    inside = beats()[len(during) + len(after):]
    assert inside and inside[-1]["message"].startswith("training step 2/5, micro-batch 1/4: loss chunk 3/8 (")
    heartbeat.phase("saving checkpoint-2")
    time.sleep(0.4)
    assert beats()[-1]["message"].startswith("saving checkpoint-2 (")  # a new phase clears the detail
    heartbeat.attach(None, "")
    count = len(beats())
    time.sleep(0.6)
    assert len(beats()) == count  # detached (the run is over): silence


def test_the_watchdog_speaks_only_after_a_silence(monkeypatch):
    """Events of the stage's own reset the clock: a chatty stage gets no heartbeats, a silent one gets one per
    interval, never two gaps of an interval in a row."""
    monkeypatch.setattr(heartbeat, "INTERVAL_S", 0.4)
    out = io.StringIO()
    events = EventWriter(stream=out)
    heartbeat.attach(events, "kd", "training step 1/3")
    try:
        for _ in range(12):  # 1.2 s of events every 0.1 s
            events.log("busy")
            time.sleep(0.1)
        chatty = [json.loads(line) for line in out.getvalue().splitlines()]
        assert all(e["type"] == "log" for e in chatty)
        time.sleep(1.3)  # silence: about three heartbeats
    finally:
        heartbeat.attach(None, "")
    silent = [json.loads(line) for line in out.getvalue().splitlines()][len(chatty):]
    assert 2 <= len(silent) <= 4 and all(e["type"] == "status" for e in silent)
    assert silent[0]["data"]["message"].startswith("training step 1/3 (")
    times = [e["time"] for e in chatty[-1:] + silent]
    assert max(b - a for a, b in zip(times, times[1:])) < 0.4 + 0.3


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
