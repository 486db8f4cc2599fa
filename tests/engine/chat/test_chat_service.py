"""The chat service as a real subprocess: it streams tokens for two models (one loaded in 4 bits), obeys stop,
keeps reading commands while generating, survives a malformed line, an unknown model and a bad folder, unloads,
and exits cleanly on EOF."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from quant_helpers import make_tiny_model

ROOT = Path(__file__).resolve().parents[3]
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


class Service:
    """A running ``python -m engine chat`` with its events collected by a reader thread."""

    def __init__(self, args: list[str], home: Path) -> None:
        env = dict(os.environ, COMPRESSION_STUDIO_HOME=str(home), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", "chat", *args], cwd=ROOT, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.events: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def send(self, obj: dict | str) -> None:
        self.proc.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
        self.proc.stdin.flush()

    def wait_for(self, predicate, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            self.seen.append(event)
            if predicate(event):
                return event


def is_(kind: str, **data):
    return lambda e: e["type"] == kind and all(e["data"].get(k) == v for k, v in data.items())


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    folder = make_tiny_model(root / "tiny")
    svc = Service(["--model", f"full={folder}", "--device", "cpu"], root)
    svc.folder = folder
    svc.wait_for(is_("loaded", model="full"), timeout=120)
    yield svc
    if svc.proc.poll() is None:
        svc.proc.kill()


def test_bad_lines_and_unknown_models_get_errors(service):
    service.send("this is not json")
    assert "not valid JSON" in service.wait_for(is_("error"))["data"]["message"]
    service.send({"type": "generate", "request_id": "x", "model": "nobody", "messages": MESSAGES})
    error = service.wait_for(is_("error", request_id="x"))
    assert "'nobody' is not loaded" in error["data"]["message"]
    service.send({"type": "load", "model": "bad", "source": str(service.folder.parent)})
    assert "not a model folder" in service.wait_for(is_("error", model="bad"))["data"]["message"]
    service.send({"type": "cancel"})
    assert "does not handle" in service.wait_for(is_("error"))["data"]["message"]


def test_score_is_the_evaluations_rouge_l(service):
    """The arena asks the service for ROUGE-L: stemmed ("dogs" → "dog", "running" → "run"), so 3 of 4 tokens
    match both ways: P = R = F = 0.75 (an unstemmed scorer says 0.5)."""
    from engine.evaluation.scores import rouge_l

    service.send({"type": "score", "id": "s1", "prediction": "The dogs are running",
                  "reference": "the dog is running"})
    assert service.wait_for(is_("score", id="s1"))["data"]["rougeL"] == pytest.approx(0.75)
    service.send({"type": "score", "id": "s2", "prediction": "El niño comió", "reference": "el niño comió pan"})
    value = service.wait_for(is_("score", id="s2"))["data"]["rougeL"]
    assert value == pytest.approx(rouge_l("El niño comió", "el niño comió pan")) == pytest.approx(2 * 3 / 7)
    service.send({"type": "score", "id": "s3", "prediction": 5, "reference": "x"})
    assert "score.prediction must be text, got 5." in service.wait_for(is_("error"))["data"]["message"]


def test_two_models_stream_concurrently(service):
    service.send({"type": "load", "model": "q4", "source": str(service.folder), "load_in_4bit": True})
    loaded = service.wait_for(is_("loaded", model="q4"), timeout=120)["data"]
    assert loaded["quantized"] is True and loaded["memory_bytes"] > 0
    full = next(e["data"] for e in service.seen if e["type"] == "loaded" and e["data"]["model"] == "full")
    assert loaded["parameters"] == full["parameters"]  # packed 4-bit weights counted at their real shape
    sampling = {"greedy": True, "max_new_tokens": 16}
    for rid, model in (("a", "full"), ("b", "q4")):
        service.send({"type": "generate", "request_id": rid, "model": model, "messages": MESSAGES,
                      "sampling": sampling})
    done = {}
    while len(done) < 2:
        event = service.wait_for(lambda e: e["type"] in ("done", "error"))
        assert event["type"] == "done", event
        done[event["data"]["request_id"]] = event["data"]
    for rid, model in (("a", "full"), ("b", "q4")):
        tokens = [e["data"]["text"] for e in service.seen if e["type"] == "token" and e["data"]["request_id"] == rid]
        d = done[rid]
        assert tokens and d["model"] == model and d["status"] == "finished"
        assert "".join(tokens) == d["text"] and 0 < d["completion_tokens"] <= 16
        assert d["prompt_tokens"] > 5 and d["ttft_s"] > 0 and d["tokens_per_s"] > 0


def test_stop_ends_a_generation_while_input_is_still_read(service):
    service.send({"type": "generate", "request_id": "long", "model": "full", "messages": MESSAGES,
                  "sampling": {"greedy": False, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 400,
                               "seed": 3}})
    service.wait_for(is_("token", request_id="long"))
    service.send("{broken")  # handled while the generation runs: the reader never blocks
    assert "not valid JSON" in service.wait_for(is_("error"))["data"]["message"]
    assert not any(e["type"] == "done" and e["data"]["request_id"] == "long" for e in service.seen)
    service.send({"type": "stop", "request_id": "long"})
    done = service.wait_for(is_("done", request_id="long"))["data"]
    assert done["status"] == "stopped" and done["completion_tokens"] < 400


def test_unload_then_eof_exits_cleanly(service):
    service.send({"type": "unload", "model": "q4"})
    service.wait_for(is_("log", model="q4", action="unloaded"))
    service.send({"type": "generate", "request_id": "gone", "model": "q4", "messages": MESSAGES})
    assert "not loaded" in service.wait_for(is_("error", request_id="gone"))["data"]["message"]
    service.proc.stdin.close()
    assert service.proc.wait(timeout=30) == 0
    service.wait_for(is_("status", state="finished"))
