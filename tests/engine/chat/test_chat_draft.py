"""The chat service's ``draft`` field (issue 21, part 2): the teacher answers with the student as its draft model,
greedy, with the same text as without it; the tokens carry the speed and the share of draft tokens kept so far,
the done event the whole count; a draft that is the answering model, not loaded or not text is refused by name;
a draft with another tokenizer is refused for sampled answers."""
from __future__ import annotations

import io
import queue
import time

import pytest

from engine.chat.service import ChatService
from engine.contract.protocol import EventWriter

MESSAGES = [{"role": "user", "content": "What is 3 + 4?"}]
GREEDY = {"greedy": True, "max_new_tokens": 12}
pytestmark = pytest.mark.usefixtures("one_thread")


class Harness:
    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        writer = EventWriter(stream=io.StringIO())
        writer.listeners.append(self.events.put)
        self.service = ChatService(writer, "cpu")

    def until(self, predicate, timeout: float = 120.0) -> list:
        """Every event up to and including the first that ``predicate`` accepts."""
        seen, deadline = [], time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            seen.append(event)
            if predicate(event):
                return seen


def is_(kind: str, **data):
    return lambda e: e.type == kind and all(e.data.get(k) == v for k, v in data.items())


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    from engine.demo.kit import ensure_demo_kit

    kit = ensure_demo_kit(tmp_path_factory.mktemp("kit"))
    harness = Harness()
    for name, folder in (("teacher", kit.teacher_dir), ("student", kit.student_dir), ("bpe", kit.teacher_bpe_dir)):
        harness.service.handle({"type": "load", "model": name, "source": str(folder)})
        harness.until(is_("loaded", model=name))
    yield harness
    harness.service.shutdown()


def test_the_teacher_answers_the_same_with_the_student_as_its_draft(chat):
    base = {"type": "generate", "model": "teacher", "messages": MESSAGES, "sampling": GREEDY}
    chat.service.handle({**base, "request_id": "plain"})
    plain = chat.until(is_("done", request_id="plain"))[-1].data
    chat.service.handle({**base, "request_id": "drafted", "draft": "student"})
    events = chat.until(is_("done", request_id="drafted"))
    drafted = events[-1].data
    assert drafted["text"] == plain["text"] and drafted["completion_tokens"] == plain["completion_tokens"] > 0
    assert "draft" not in plain
    draft = drafted["draft"]
    assert draft["model"] == "student" and 0 <= draft["accepted"] <= draft["proposed"]
    assert draft["acceptance"] == (round(draft["accepted"] / draft["proposed"], 4) if draft["proposed"] else None)
    tokens = [e.data for e in events if e.type == "token" and e.data["request_id"] == "drafted"]
    assert tokens and all("draft_acceptance" in t and "tokens_per_s" in t for t in tokens)
    assert drafted["tokens_per_s"] is None or drafted["tokens_per_s"] > 0


def test_a_draft_with_another_tokenizer_drafts_greedy_answers_only(chat):
    base = {"type": "generate", "model": "bpe", "messages": MESSAGES, "draft": "student"}
    chat.service.handle({**base, "request_id": "uag", "sampling": GREEDY})
    done = chat.until(is_("done", request_id="uag"))[-1].data
    assert done["draft"]["model"] == "student" and done["status"] == "finished"
    chat.service.handle({**base, "request_id": "sampled", "sampling": {**GREEDY, "greedy": False}})
    error = chat.until(is_("error", request_id="sampled"))[-1].data
    assert "tokenizes differently" in error["message"] and "greedy" in error["message"]


@pytest.mark.parametrize("draft, sentence", [
    ("teacher", "generate.draft names 'teacher', the model that answers"),
    ("nobody", "generate.draft: model 'nobody' is not loaded"),
    (5, "generate.draft must be text or null, got 5."),
])
def test_a_bad_draft_is_refused_by_name(chat, draft, sentence):
    chat.service.handle({"type": "generate", "request_id": f"bad-{draft}", "model": "teacher", "messages": MESSAGES,
                         "draft": draft})
    error = chat.until(is_("error"))[-1].data
    assert sentence in error["message"]
