"""The arena's state, free of Qt: the panes and their conversations, the shared sampling settings, ROUGE-L of
each answer against the reference pane's, and the blind round (shuffled letters, the vote, the reveal).

The widget feeds it the chat service's events (``token``, ``done``, ``error``, ``loaded``, ``score``) and redraws
the panes it names; every rule of the arena lives here so it is tested without a display. A pane may answer with
another loaded pane's model as its draft (speculative decoding: the teacher with a student drafting for it); its
turns show the share of draft tokens kept and the speed, live. ROUGE-L is the
engine's own (stemmed, as in the evaluation tab): the session queues requests (:mod:`studio.arena.scores`), the
widget sends them to the chat service and hands the answers back to :meth:`ArenaSession.on_score`.
"""
from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass, field

from studio.arena.catalog import ModelChoice, precision_text, size_text
from studio.arena.scores import ScoreBook, ScoreRequest
from studio.arena.turns import Sampling, Turn

LETTERS = "ABCDEFGH"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass
class PaneState:
    """One model's pane: which model, how its load went, and its own conversation."""

    key: str
    choice: ModelChoice | None = None
    load_state: str = "empty"
    load_fraction: float = 0.0
    error: str = ""
    info: dict = field(default_factory=dict)  # the `loaded` event's data
    turns: list[Turn] = field(default_factory=list)
    draft: str | None = None  # the key of another pane whose model drafts this pane's answers

    @property
    def ready(self) -> bool:
        return self.load_state == "loaded"

    @property
    def busy(self) -> bool:
        return bool(self.turns) and self.turns[-1].is_open

    @property
    def name(self) -> str:
        return self.choice.label if self.choice else "no model"

    @property
    def size(self) -> str:
        parameters = self.info.get("parameters") or (self.choice.parameters if self.choice else None)
        return size_text(parameters)

    @property
    def precision(self) -> str:
        known = self.choice.precision if self.choice else ""
        if self.info:
            if self.info.get("quantized") and known.startswith("4-bit"):
                return known  # the catalog read the quant type (nf4/fp4) from config.json
            return precision_text(self.info.get("dtype", ""), bool(self.info.get("quantized")))
        return known or "precision unknown"

    def messages(self, system_prompt: str) -> list[dict]:
        """The conversation as chat messages: system, then each user turn and this pane's own answers."""
        messages = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
        for turn in self.turns:
            messages.append({"role": "user", "content": turn.user})
            if not turn.is_open and turn.answer:
                messages.append({"role": "assistant", "content": turn.answer})
        return messages


@dataclass
class BlindRound:
    """Blind mode: panes shown under shuffled letters until the user votes."""

    order: list[str]  # pane keys in display order; letter i names order[i]
    revealed: bool = False
    winner: str | None = None  # a pane key, or "tie"

    def letter(self, key: str) -> str:
        return LETTERS[self.order.index(key)] if key in self.order else "?"

    def key_of(self, letter: str) -> str:
        return self.order[LETTERS.index(letter)]


class ArenaSession:
    """All panes of the arena and the rules that tie them together."""

    def __init__(self, pane_count: int = 3, rng: random.Random | None = None) -> None:
        self.panes: list[PaneState] = [PaneState(key=f"pane{i + 1}") for i in range(pane_count)]
        self.system_prompt = DEFAULT_SYSTEM_PROMPT
        self.sampling = Sampling()
        self.reference_key: str | None = None
        self.blind: BlindRound | None = None
        self.rng = rng or random.Random()
        self._request_ids = itertools.count(1)
        self._requests: dict[str, str] = {}  # request id → pane key
        self.scores = ScoreBook()

    # ------------------------------------------------------------------ panes and models
    def pane(self, key: str) -> PaneState:
        for pane in self.panes:
            if pane.key == key:
                return pane
        raise KeyError(key)

    def set_model(self, key: str, choice: ModelChoice) -> None:
        """Put a model in a pane (its conversation restarts: another model did not say those answers)."""
        pane = self.pane(key)
        pane.choice, pane.load_state, pane.load_fraction, pane.error, pane.info = choice, "loading", 0.0, "", {}
        pane.turns.clear()
        if self.reference_key is None and choice.role == "teacher":
            self.reference_key = key

    def remove_model(self, key: str) -> None:
        """Empty a pane (its model unloaded, its conversation dropped)."""
        pane = self.pane(key)
        pane.choice, pane.load_state, pane.load_fraction, pane.error, pane.info = None, "empty", 0.0, "", {}
        pane.turns.clear()
        if self.reference_key == key:
            self.reference_key = None
        if self.blind is not None and key in self.blind.order:
            self.blind.order.remove(key)

    def set_draft(self, key: str, draft: str | None) -> None:
        """Let pane ``draft``'s model draft pane ``key``'s answers (None: no draft)."""
        if draft == key:
            raise ValueError("a pane cannot draft for itself; pick another pane's model.")
        self.pane(key).draft = draft if draft is None else self.pane(draft).key

    def draft_of(self, key: str) -> str | None:
        """The pane whose model drafts ``key``'s next answer: set, another pane, and loaded (else None)."""
        draft = self.pane(key).draft
        return draft if draft and draft != key and self.pane(draft).ready else None

    def on_service_lost(self, message: str) -> list[str]:
        """The chat service died: every model in it is gone; returns the panes that changed."""
        changed = []
        for pane in self.panes:
            if pane.load_state in ("loading", "loaded"):
                pane.load_state, pane.error = "failed", message
                changed.append(pane.key)
            if pane.busy:
                pane.turns[-1].status, pane.turns[-1].error = "error", message
                changed.append(pane.key)
        return changed

    def on_load_progress(self, key: str, fraction: float) -> None:
        pane = self.pane(key)
        if pane.load_state == "loading":
            pane.load_fraction = max(pane.load_fraction, min(1.0, float(fraction)))

    def on_loaded(self, key: str, info: dict) -> None:
        pane = self.pane(key)
        pane.load_state, pane.load_fraction, pane.info, pane.error = "loaded", 1.0, dict(info), ""

    def on_load_failed(self, key: str, message: str) -> None:
        pane = self.pane(key)
        pane.load_state, pane.error = "failed", message
        if self.blind is not None and key in self.blind.order:
            self.blind.order.remove(key)  # nothing to vote for: no letter for a pane that cannot answer

    def ready_panes(self) -> list[PaneState]:
        return [p for p in self.panes if p.ready]

    @property
    def busy(self) -> bool:
        return any(p.busy for p in self.panes)

    # ------------------------------------------------------------------ turns
    def start_turn(self, prompt: str) -> list[tuple[str, str, list[dict]]]:
        """Open a turn in every ready pane; returns (pane key, request id, messages) to send to the service."""
        prompt = prompt.strip()
        if not prompt:
            raise ValueError("the prompt is empty.")
        if self.busy:
            raise RuntimeError("the panes are still answering; stop them or wait.")
        panes = self.ready_panes()
        if not panes:
            raise RuntimeError("no model is loaded; pick one in a pane and load it.")
        if self.blind is not None and self.blind.revealed:
            self.shuffle_blind()  # a new round: new letters, names hidden again
        requests = []
        for pane in panes:
            request_id = f"{pane.key}-r{next(self._request_ids)}"
            draft = self.draft_of(pane.key)
            pane.turns.append(Turn(user=prompt, request_id=request_id, draft=self.pane(draft).name if draft else ""))
            self._requests[request_id] = pane.key
            requests.append((pane.key, request_id, pane.messages(self.system_prompt)))
        return requests

    def pane_of_request(self, request_id: str) -> str | None:
        return self._requests.get(request_id)

    def _turn(self, request_id: str) -> tuple[PaneState, Turn] | None:
        key = self._requests.get(request_id)
        if key is None:
            return None
        pane = self.pane(key)
        for turn in reversed(pane.turns):
            if turn.request_id == request_id:
                return pane, turn
        return None

    def on_token(self, request_id: str, text: str, live: dict | None = None) -> str | None:
        """Append streamed text and the token's live numbers (``tokens_per_s``, ``draft_acceptance``); returns
        the pane key (None for a request of a cleared conversation)."""
        found = self._turn(request_id)
        if found is None or not found[1].is_open:
            return None
        turn = found[1]
        turn.answer += text
        for key in ("tokens_per_s", "draft_acceptance"):
            if isinstance((live or {}).get(key), (int, float)):
                setattr(turn, key, float(live[key]))
        return found[0].key

    def on_done(self, request_id: str, data: dict) -> list[str]:
        """Close a turn with the service's numbers; returns every pane key whose display changed."""
        found = self._turn(request_id)
        if found is None:
            return []
        pane, turn = found
        turn.status = data.get("status", "finished") if data.get("status") in ("finished", "stopped") else "finished"
        if isinstance(data.get("text"), str):
            turn.answer = data["text"]  # the final text is authoritative (streamed pieces may split characters)
        turn.completion_tokens = data.get("completion_tokens")
        turn.prompt_tokens = data.get("prompt_tokens")
        turn.ttft_s, turn.tokens_per_s = data.get("ttft_s"), data.get("tokens_per_s")
        if isinstance(data.get("draft"), dict):
            turn.draft_acceptance = data["draft"].get("acceptance")
        return [pane.key, *self.update_scores(pane.turns.index(turn))]

    def on_request_error(self, request_id: str, message: str) -> str | None:
        found = self._turn(request_id)
        if found is None:
            return None
        found[1].status, found[1].error = "error", message
        return found[0].key

    def stop_all(self) -> list[str]:
        """Request ids still streaming (the widget sends one ``stop`` for all of them)."""
        return [p.turns[-1].request_id for p in self.panes if p.busy]

    def clear(self) -> None:
        """Forget every conversation (the models stay loaded)."""
        for pane in self.panes:
            pane.turns.clear()
        self._requests.clear()
        self.scores.forget_requests()
        if self.blind is not None:
            self.shuffle_blind()

    # ------------------------------------------------------------------ ROUGE-L against the reference
    def set_reference(self, key: str | None) -> None:
        self.reference_key = key
        for index in range(max((len(p.turns) for p in self.panes), default=0)):
            self.update_scores(index)

    def update_scores(self, index: int) -> list[str]:
        """ROUGE-L of each finished answer at turn ``index`` against the reference pane's: known scores are set at
        once, the others queued for the engine (:meth:`take_score_requests`). Returns changed pane keys."""
        changed = []
        ref = self._finished_turn(self.reference_key, index) if self.reference_key else None
        for pane in self.panes:
            if index >= len(pane.turns):
                continue
            turn = pane.turns[index]
            score = None
            if ref is not None and pane.key != self.reference_key and not turn.is_open and turn.status != "error":
                score = self.scores.lookup(pane.key, index, turn.answer, ref.answer)
            if score != turn.rouge_l:
                turn.rouge_l = score
                changed.append(pane.key)
        return changed

    def take_score_requests(self) -> list[ScoreRequest]:
        """The scores to ask the engine for (each handed out once)."""
        return self.scores.take()

    def on_score(self, score_id: str, value: float) -> str | None:
        """The engine's ROUGE-L for a request; returns the pane key to redraw (None if the answer moved on)."""
        request = self.scores.answer(score_id, value)
        if request is None:
            return None
        ref = self._finished_turn(self.reference_key, request.index) if self.reference_key else None
        try:
            turn = self.pane(request.key).turns[request.index]
        except IndexError:
            return None
        if ref is None or ref.answer != request.reference or turn.answer != request.prediction:
            return None  # the reference or the answer changed meanwhile; a newer request is on its way
        turn.rouge_l = value
        return request.key

    def _finished_turn(self, key: str | None, index: int) -> Turn | None:
        try:
            turn = self.pane(key).turns[index] if key else None
        except (KeyError, IndexError):
            return None
        return turn if turn is not None and turn.status in ("finished", "stopped") else None

    # ------------------------------------------------------------------ blind mode
    def set_blind(self, enabled: bool) -> None:
        self.blind = None
        if enabled:
            self.shuffle_blind()

    def shuffle_blind(self) -> None:
        keys = [p.key for p in self.panes if p.choice is not None and p.load_state != "failed"]
        self.rng.shuffle(keys)
        self.blind = BlindRound(order=keys)

    def names_hidden(self) -> bool:
        return self.blind is not None and not self.blind.revealed

    def display_order(self) -> list[str]:
        """Pane keys in the order they are shown (shuffled in blind mode)."""
        keys = [p.key for p in self.panes]
        if self.blind is None:
            return keys
        return self.blind.order + [k for k in keys if k not in self.blind.order]

    def can_vote(self) -> bool:
        """A vote needs a blind round whose names are hidden and two or more panes that answered the last turn."""
        if not self.names_hidden() or self.busy:
            return False
        answered = [p for p in self.panes if p.key in self.blind.order and p.turns and p.turns[-1].answer]
        return len(answered) >= 2

    def vote(self, letter: str | None) -> dict:
        """Record the winner (a letter, or None for a tie), reveal the names and return the vote record."""
        if not self.can_vote():
            raise RuntimeError("there is nothing to vote on yet: let two or more blind panes answer first.")
        winner = "tie" if letter is None else self.blind.key_of(letter)
        self.blind.winner, self.blind.revealed = winner, True
        shown = [self.pane(k) for k in self.blind.order if self.pane(k).turns]
        return {
            "time": round(time.time(), 3),
            "winner": "tie" if winner == "tie" else self.pane(winner).name,
            "winner_letter": letter or "tie",
            "models": {self.blind.letter(p.key): p.name for p in shown},
            "sources": {p.name: p.choice.source for p in shown if p.choice},
            "prompt": shown[0].turns[-1].user if shown else "",
            "turn": len(shown[0].turns) if shown else 0,
            "answers": {p.name: p.turns[-1].answer for p in shown},
            "system_prompt": self.system_prompt,
            "sampling": self.sampling.to_dict(),
        }

    def label(self, key: str) -> str:
        """What a pane's header says: the model's name, or its letter while the round is blind."""
        if self.names_hidden():
            return f"Model {self.blind.letter(key)}"
        return self.pane(key).name
