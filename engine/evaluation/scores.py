"""Scores of generated answers against references: ROUGE-L F1 (the paper's metric), exact match, per-category
breakdowns, and retention (a student's score ÷ its teacher's).

ROUGE-L comes from ``rouge_score`` with stemming, but with a Unicode-aware tokenizer: rouge_score's default one
replaces every character outside ``[a-z0-9]`` by a space, which splits Spanish words at their accents
("comió" → "comi", "niño" → "ni o") and would score Spanish answers on fragments. Ours lowercases, keeps every
Unicode letter and digit run as a token and applies the same Porter stemming to tokens longer than three
characters as rouge_score's ``use_stemmer=True`` does.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from collections import defaultdict
from typing import Any

_WORD = re.compile(r"[^\W_]+", re.UNICODE)  # runs of Unicode letters/digits (no underscore, like rouge_score)
_TRAILING_PUNCT = ".!?¡¿,;:。"


class UnicodeTokenizer:
    """rouge_score tokenizer interface (``tokenize(text) -> list[str]``) that keeps accented letters."""

    def __init__(self, use_stemmer: bool = True) -> None:
        from nltk.stem import porter  # rouge_score depends on nltk and uses this same stemmer

        self._stem = porter.PorterStemmer().stem if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        tokens = _WORD.findall(unicodedata.normalize("NFC", text or "").lower())
        if self._stem is None:
            return tokens
        return [self._stem(t) if len(t) > 3 else t for t in tokens]


@functools.lru_cache(maxsize=1)
def _scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True, tokenizer=UnicodeTokenizer(use_stemmer=True))


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1 of ``pred`` against ``ref`` (LCS of stemmed tokens); 0 when either has no words."""
    return float(_scorer().score(ref or "", pred or "")["rougeL"].fmeasure)


def normalize_answer(text: str) -> str:
    """Case-folded, whitespace-collapsed, without trailing sentence punctuation."""
    text = " ".join(unicodedata.normalize("NFC", text or "").casefold().split())
    return text.rstrip(_TRAILING_PUNCT).rstrip()


def exact_match(pred: str, ref: str) -> float:
    """1.0 if the answers agree after :func:`normalize_answer`, else 0.0."""
    return float(normalize_answer(pred) == normalize_answer(ref))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _summary(rouge: list[float], exact: list[float]) -> dict:
    return {"rougeL": _mean(rouge), "exact_match": _mean(exact), "n": len(rouge)}


def score_predictions(records: list[dict], preds: list[str]) -> dict:
    """Mean ROUGE-L and exact match of ``preds`` against each record's ``response``, overall and per category::

        {"rougeL": float, "exact_match": float, "n": int, "per_category": {cat: {"rougeL", "exact_match", "n"}}}

    Records carrying an ``answer`` also get ``answer_accuracy``: the share of predictions that state it — for a
    numeric answer the prediction's last number must equal it, otherwise the normalised answer's words must
    appear in order in the prediction.
    """
    if len(records) != len(preds):
        raise ValueError(f"{len(preds)} predictions for {len(records)} records")
    rouge = [rouge_l(p, r["response"]) for r, p in zip(records, preds)]
    exact = [exact_match(p, r["response"]) for r, p in zip(records, preds)]
    scores = _summary(rouge, exact)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        groups[str(record.get("category") or "general")].append(i)
    scores["per_category"] = {cat: _summary([rouge[i] for i in idx], [exact[i] for i in idx])
                              for cat, idx in sorted(groups.items())}
    answered = [(r["answer"], p) for r, p in zip(records, preds) if r.get("answer")]
    if answered:
        scores["answer_accuracy"] = _mean([float(states_answer(p, a)) for a, p in answered])
    return scores


_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")


def states_answer(pred: str, answer: str) -> bool:
    """Whether ``pred`` gives ``answer``: its last number for numeric answers, else the answer's words in order."""
    answer = normalize_answer(answer)
    if _NUMBER.fullmatch(answer):
        numbers = _NUMBER.findall(pred or "")
        return bool(numbers) and numbers[-1].replace(",", ".") == answer.replace(",", ".")
    words, pred_words = _WORD.findall(answer), _WORD.findall(normalize_answer(pred))
    if not words:
        return False
    return any(pred_words[i:i + len(words)] == words for i in range(len(pred_words) - len(words) + 1))


def retention(student_score: float | None, teacher_score: float | None) -> float | None:
    """student ÷ teacher (the paper's retention); None when either is missing or the teacher scored 0."""
    if not isinstance(student_score, (int, float)) or not isinstance(teacher_score, (int, float)):
        return None
    if teacher_score == 0:
        return None
    return float(student_score) / float(teacher_score)
