"""A stand-in for ``compression-engine chat`` that speaks the same JSON-lines protocol without torch.

It loads nothing: ``load`` reports progress and a made-up size (a source named ``broken`` fails, one named
``too-big`` is refused with a memory estimate, as the real service does); ``generate`` streams a scripted answer
word by word (``FAKE_CHAT_DELAY`` seconds apart, default 0.03) from a thread, so ``stop`` is obeyed mid-answer.
``score`` answers with a plain LCS ROUGE-L (lower-cased word tokens, no stemming: the real service uses
engine.evaluation.scores, checked in tests/engine/chat/test_chat_service.py and
tests/studio/test_arena_real_service.py).
Used by the arena's fast tests and by the screenshot script.
"""
from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.contract.protocol import EventWriter, ProtocolError, hello, parse_command

DELAY = float(__import__("os").environ.get("FAKE_CHAT_DELAY", "0.03"))

SCRIPT = {  # prompt → answers by model kind (teacher, student, quantized)
    "what is 17 + 25? explain briefly.": (
        "17 + 25 = 42. Add the tens (10 + 20 = 30) and the ones (7 + 5 = 12), then 30 + 12 = 42.",
        "17 + 25 = 42. Add the tens (10 + 20 = 30) and the ones (7 + 5 = 12), so the sum is 42.",
        "17 + 25 = 42. Add the tens and the ones: 30 + 12 = 42."),
    "now multiply the result by 3.": (
        "42 × 3 = 126, because 40 × 3 = 120 and 2 × 3 = 6.",
        "42 × 3 = 126: 40 × 3 = 120, plus 2 × 3 = 6.",
        "42 × 3 = 126. 40 × 3 is 120 and 2 × 3 is 6, so 126."),
}


def lcs_rouge_l(prediction: str, reference: str) -> float:
    """F-measure of the longest common subsequence of lower-cased word tokens (no stemming)."""
    pred, ref = re.findall(r"\w+", prediction.lower()), re.findall(r"\w+", reference.lower())
    previous = [0] * (len(pred) + 1)
    for token in ref:
        current = [0]
        for j, other in enumerate(pred, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    return 0.0 if lcs == 0 else 2 * lcs / (len(pred) + len(ref))


def kind_of(source: str, load_in_4bit: bool) -> int:
    if load_in_4bit or "4bit" in source or "quant" in source:
        return 2
    return 0 if "teacher" in source else 1


def answer_for(kind: int, messages: list[dict]) -> str:
    prompt = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    scripted = SCRIPT.get(prompt.strip().lower())
    if scripted:
        return scripted[kind]
    words = re.findall(r"\w+", prompt.lower())[:8]
    tail = ("the teacher knows it well", "the student mostly knows it", "the 4-bit student roughly knows it")[kind]
    return f"You asked about {' '.join(words) or 'nothing'}; {tail}. That is my answer."


class FakeChat:
    def __init__(self, writer: EventWriter) -> None:
        self.writer = writer
        self.models: dict[str, tuple[str, bool]] = {}
        self.stops: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def error(self, message: str, command: dict | None = None) -> None:
        command = command or {}
        self.writer.emit("error", message=message, request_id=command.get("request_id", ""),
                         model=command.get("model", ""), stage="chat", detail="")

    def load(self, command: dict) -> None:
        name, source, four = command.get("model", ""), command.get("source", ""), bool(command.get("load_in_4bit"))
        for step in range(3):
            self.writer.emit("progress", stage=f"load {name}", step=step, total=2, fraction=step / 2,
                             elapsed_s=0.0, eta_s=None, unit="step")
            time.sleep(DELAY)
        if Path(source).name == "broken" or source == "broken":
            return self.error(f"cannot load {source}: it is not a model folder (no config.json).", command)
        if "too-big" in source:
            return self.error(f"{name} needs about 61.2 GiB but only 20.0 GiB are free; it was not loaded.",
                              command)
        kind = kind_of(source, four)
        self.models[name] = (source, four)
        parameters = (3_512_704, 494_032, 494_032)[kind]
        self.writer.emit("loaded", model=name, source=source, device="cpu", parameters=parameters,
                         dtype="torch.float32", memory_bytes=parameters * (4 if kind < 2 else 1),
                         quantized=kind == 2, estimate_bytes=None, load_s=0.1, chat_template=True)

    def generate(self, command: dict) -> None:
        name, request_id = command.get("model"), command.get("request_id", "")
        if name not in self.models:
            return self.error(f"model {name!r} is not loaded; loaded: {', '.join(self.models) or 'none'}.", command)
        stop = self.stops[request_id] = threading.Event()
        threading.Thread(target=self._stream, args=(command, stop), daemon=True).start()

    def _stream(self, command: dict, stop: threading.Event) -> None:
        name, request_id = command["model"], command["request_id"]
        source, four = self.models[name]
        sampling = command.get("sampling") or {}
        pieces = re.findall(r"\S+\s*", answer_for(kind_of(source, four), command.get("messages") or []))
        pieces = pieces[: int(sampling.get("max_new_tokens", 128))]
        start, first, sent = time.perf_counter(), None, []
        for piece in pieces:
            if stop.wait(DELAY * (1.5 if kind_of(source, four) == 0 else 1.0)):
                break
            first = first or time.perf_counter()
            sent.append(piece)
            live = {"draft_acceptance": 0.5} if command.get("draft") else {}  # a drafted answer's numbers, live
            self.writer.emit("token", request_id=request_id, model=name, text=piece, **live)
        elapsed = time.perf_counter() - (first or start)
        self.stops.pop(request_id, None)
        self.writer.emit("done", request_id=request_id, model=name,
                         status="stopped" if stop.is_set() else "finished", prompt_tokens=24,
                         completion_tokens=len(sent), ttft_s=round((first or start) - start, 4),
                         tokens_per_s=round((len(sent) - 1) / elapsed, 2) if len(sent) > 1 and elapsed else None,
                         text="".join(sent), **({"draft": {"model": command["draft"], "acceptance": 0.75,
                                                           "proposed": 8, "accepted": 6}}
                                                if command.get("draft") else {}))

    def handle(self, command: dict) -> bool:
        kind = command["type"]
        if kind == "quit":
            return False
        if kind == "load":
            threading.Thread(target=self.load, args=(command,), daemon=True).start()
        elif kind == "generate":
            self.generate(command)
        elif kind == "stop":
            targets = [command["request_id"]] if command.get("request_id") else list(self.stops)
            for request_id in targets:
                if request_id in self.stops:
                    self.stops[request_id].set()
        elif kind == "score":
            self.writer.emit("score", id=command.get("id", ""),
                             rougeL=lcs_rouge_l(command.get("prediction", ""), command.get("reference", "")))
        elif kind == "unload":
            self.models.pop(command.get("model"), None)
            self.writer.emit("log", level="info", message="unloaded", model=command.get("model"), action="unloaded")
        return True


def main() -> int:
    writer = EventWriter()
    hello(writer, "chat", "fake")
    service = FakeChat(writer)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            command = parse_command(line)
        except ProtocolError as exc:
            service.error(str(exc))
            continue
        if not service.handle(command):
            break
    writer.emit("status", state="finished", stage="chat", message="fake chat service stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
