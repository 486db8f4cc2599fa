"""The chat service under hostile requests (issue 19, item 8), driven in-process: every field of every command
refuses a value of the wrong JSON type by name; a prompt longer than the model's context is refused before any
work (a 1 MB one before it is even tokenized); an answer that would run past the context is shortened with a
warning; and ``stop`` ends a generation, running or queued, within a second."""
from __future__ import annotations

import io
import queue
import sys
import time
from pathlib import Path

import pytest

from engine.chat.service import ChatService
from engine.contract.protocol import EventWriter

sys.path.insert(0, str(Path(__file__).parents[1]))
from quant_helpers import make_tiny_model

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


class Harness:
    """A ChatService whose events land in a queue."""

    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        writer = EventWriter(stream=io.StringIO())
        writer.listeners.append(self.events.put)
        self.service = ChatService(writer, "cpu")

    def send(self, command: dict) -> None:
        self.service.handle(command)

    def wait_for(self, predicate, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if predicate(event):
                return event


def is_(kind: str, **data):
    return lambda e: e.type == kind and all(e.data.get(k) == v for k, v in data.items())


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    folder = make_tiny_model(tmp_path_factory.mktemp("chat") / "tiny")  # max_position_embeddings: 512
    harness = Harness()
    harness.send({"type": "load", "model": "full", "source": str(folder)})
    harness.wait_for(is_("loaded", model="full"), timeout=120)
    yield harness
    harness.service.shutdown()


@pytest.mark.parametrize("command, sentence", [
    ({"type": "generate", "request_id": "t", "model": "full", "messages": MESSAGES, "sampling": {"greedy": "false"}},
     'generate.sampling.greedy must be true or false, got "false" (text).'),
    ({"type": "generate", "request_id": "t", "model": "full", "messages": MESSAGES,
      "sampling": {"max_new_tokens": "16"}}, "generate.sampling.max_new_tokens must be a whole number, got \"16\""),
    ({"type": "generate", "request_id": "t", "model": "full", "messages": MESSAGES,
      "sampling": {"max_new_tokens": 16.5}}, "generate.sampling.max_new_tokens must be a whole number, got 16.5"),
    ({"type": "generate", "request_id": "t", "model": "full", "messages": MESSAGES,
      "sampling": {"temperature": "0.7"}}, "generate.sampling.temperature must be a number"),
    ({"type": "generate", "request_id": "t", "model": "full", "messages": MESSAGES, "sampling": {"top_p": True}},
     "generate.sampling.top_p must be a number, got true"),
    ({"type": "generate", "request_id": "t", "model": "full", "messages": MESSAGES, "sampling": {"seed": 1.5}},
     "generate.sampling.seed must be a whole number or null"),
    ({"type": "generate", "request_id": "t", "model": "full", "messages": MESSAGES, "sampling": [1]},
     "generate.sampling must be an object or null"),
    ({"type": "generate", "request_id": 7, "model": "full", "messages": MESSAGES}, "generate.request_id must be text"),
    ({"type": "generate", "request_id": "t", "model": "full", "messages": "hi"}, "generate.messages must be a list"),
    ({"type": "generate", "request_id": "t", "model": "full", "messages": MESSAGES, "temprature": 1},
     'generate has no field "temprature"; its fields are request_id, model, messages, sampling, draft.'),
    ({"type": "load", "model": "x", "source": "demo:student", "load_in_4bit": "no"},
     'load.load_in_4bit must be true or false, got "no" (text).'),
    ({"type": "load", "model": 5, "source": "demo:student"}, "load.model must be text, got 5"),
    ({"type": "stop", "request_id": 0}, "stop.request_id must be text or null, got 0"),
    ({"type": "unload", "model": None}, "unload.model must be text, got null"),
    ({"type": "score", "id": 5, "prediction": "a", "reference": "b"}, "score.id must be text, got 5"),
    ({"type": "quit", "now": True}, 'quit has no field "now"'),
])
def test_every_field_refuses_the_wrong_type_by_name(chat, command, sentence):
    chat.send(command)
    error = chat.wait_for(lambda e: e.type in ("error", "token", "done", "loaded"), timeout=10)
    assert error.type == "error" and sentence in error.data["message"]


def test_a_megabyte_prompt_is_refused_before_it_is_tokenized(chat, monkeypatch):
    loaded = chat.service.models["full"]
    calls = []
    real = type(loaded.tokenizer).__call__
    monkeypatch.setattr(type(loaded.tokenizer), "__call__",
                        lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    started = time.monotonic()
    chat.send({"type": "generate", "request_id": "huge", "model": "full",
               "messages": [{"role": "user", "content": "x" * 1_000_000}]})
    error = chat.wait_for(is_("error", request_id="huge"), timeout=10)
    assert time.monotonic() - started < 1.0 and not calls
    assert "1,000,000 characters long" in error.data["message"] and "512 tokens" in error.data["message"]


def test_a_prompt_longer_than_the_context_is_refused_in_tokens(chat):
    content = "~" * 600  # '~' is in no merge of the tiny tokenizer: one token each, few enough characters
    chat.send({"type": "generate", "request_id": "long", "model": "full",
               "messages": [{"role": "user", "content": content}]})
    message = chat.wait_for(is_("error", request_id="long"), timeout=30).data["message"]
    assert "reads at most 512 (max_position_embeddings)" in message and "shorten the conversation" in message


def test_an_answer_past_the_context_is_shortened_with_a_warning(chat):
    chat.send({"type": "generate", "request_id": "fit", "model": "full",
               "messages": [{"role": "user", "content": "~" * 480}],
               "sampling": {"greedy": True, "max_new_tokens": 200}})
    warning = chat.wait_for(is_("log", request_id="fit"), timeout=30).data
    room = int(warning["message"].split("limited to ")[1].split(" ")[0])
    assert warning["level"] == "warning" and 0 < room < 200
    done = chat.wait_for(is_("done", request_id="fit"), timeout=60).data
    assert done["completion_tokens"] <= room and done["prompt_tokens"] + room == 512


def _slow_forward(model, delay_s: float):
    real = model.forward

    def forward(*args, **kwargs):
        time.sleep(delay_s)  # a large model's step on a slow machine
        return real(*args, **kwargs)

    return forward


def test_stop_ends_a_running_and_a_queued_generation_within_a_second(chat, monkeypatch):
    loaded = chat.service.models["full"]
    monkeypatch.setattr(loaded.model, "forward", _slow_forward(loaded.model, 0.05))
    sampling = {"greedy": False, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 400, "seed": 1}
    for rid in ("running", "queued"):  # one model answers one request at a time: the second waits
        chat.send({"type": "generate", "request_id": rid, "model": "full", "messages": MESSAGES, "sampling": sampling})
    chat.wait_for(is_("token", request_id="running"), timeout=30)
    for rid in ("queued", "running"):
        started = time.monotonic()
        chat.send({"type": "stop", "request_id": rid})
        done = chat.wait_for(is_("done", request_id=rid), timeout=5).data
        assert time.monotonic() - started < 1.0 and done["status"] == "stopped"
        assert done["completion_tokens"] < 400
        if rid == "queued":
            assert done["completion_tokens"] == 0 and done["prompt_tokens"] == 0  # never prefilled
