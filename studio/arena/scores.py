"""ROUGE-L in the arena is the engine's own (engine.evaluation.scores, stemmed, as in the evaluation tab), asked of the
chat
service: this book remembers the scores it got, queues the ones still to ask and matches answers to questions.
Stdlib only; the session owns one."""
from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass(frozen=True)
class ScoreRequest:
    """ROUGE-L wanted for one pane's answer at one turn, against the reference pane's answer."""

    score_id: str
    key: str
    index: int
    prediction: str
    reference: str


class ScoreBook:
    """Known scores by (prediction, reference); requests to send; requests sent and not yet answered."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._known: dict[tuple[str, str], float] = {}
        self._pending: dict[str, ScoreRequest] = {}
        self._outbox: list[ScoreRequest] = []

    def lookup(self, key: str, index: int, prediction: str, reference: str) -> float | None:
        """The score if known; otherwise None, and a request is queued for the engine."""
        score = self._known.get((prediction, reference))
        if score is None:
            self._outbox.append(ScoreRequest(f"score-{next(self._ids)}", key, index, prediction, reference))
        return score

    def take(self) -> list[ScoreRequest]:
        """The requests to send (each handed out once)."""
        out, self._outbox = self._outbox, []
        self._pending.update({r.score_id: r for r in out})
        return out

    def answer(self, score_id: str, value: float) -> ScoreRequest | None:
        """Record the engine's answer; returns the request it answers (None if unknown or answered already)."""
        request = self._pending.pop(score_id, None)
        if request is not None:
            self._known[(request.prediction, request.reference)] = value
        return request

    def forget_requests(self) -> None:
        """Drop what is queued or in flight (the conversations were cleared); known scores stay valid."""
        self._pending.clear()
        self._outbox.clear()
